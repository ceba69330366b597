"""Samplers of the training noise level t, with the weights that keep the loss unbiased.

- Discrete levels (improved DDPM, Nichol & Dhariwal 2021, Sec. 3.3): the loss-second-moment sampler for
  L_vlb, p_t proportional to sqrt(E[L_t^2]) over the last 10 values of each L_t, uniform until every level
  has 10; as in the authors' code a 0.001 share of uniform probability is mixed in so that no level starves.
  A draw t gets the weight 1 / (N p_t), so E_p[w L_t] = (1/N) sum_t L_t, the uniform-t loss.
- Continuous levels (Song, Durkan, Murray & Ermon 2021): t in [0, N-1] with log sigma interpolated between the
  process's levels. With likelihood weighting lambda = g^2 the score-matching loss of the VP, sub-VP and VE
  SDEs is int ||eps - eps_hat||^2 d log sigma (g^2 / s^2 = d log sigma^2 / dt for each of them), so
  ``uniform`` draws t uniformly with the weight (N - 1) d log sigma / dt and ``importance`` draws log sigma
  uniformly (density proportional to the weighting) with the constant weight log(sigma_max / sigma_min).
"""

from __future__ import annotations

import torch

from ..config import CHOICES
from ..processes import DiscreteProcess

T_SAMPLING = CHOICES["training.t_sampling"]
HISTORY = 10
UNIFORM_SHARE = 0.001


class LossSecondMomentSampler:
    """Improved DDPM's importance sampler of discrete levels (state: the loss history, saved with the run)."""

    def __init__(self, num_levels: int):
        self.num_levels = num_levels
        self.history = torch.zeros(num_levels, HISTORY, dtype=torch.float64)
        self.count = torch.zeros(num_levels, dtype=torch.long)

    @property
    def warm(self) -> bool:
        return bool((self.count >= HISTORY).all())

    def probs(self) -> torch.Tensor:
        """p_t (float64): uniform until warm, then sqrt(E[L_t^2]) normalised, with the uniform share mixed in."""
        n = self.num_levels
        if not self.warm:
            return torch.full((n,), 1.0 / n, dtype=torch.float64)
        p = (self.history**2).mean(1).sqrt()
        p = p / p.sum()
        return p * (1.0 - UNIFORM_SHARE) + UNIFORM_SHARE / n

    def draw(self, batch: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Levels t ~ p and their weights 1 / (N p_t)."""
        p = self.probs()
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64).cpu()
        t = torch.searchsorted(p.cumsum(0), u, right=True).clamp(max=self.num_levels - 1)
        return t.to(device), (1.0 / (self.num_levels * p[t])).to(device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each (level, unweighted loss) of a global batch to that level's history, oldest out."""
        for level, loss in zip(t.tolist(), losses.double().tolist()):
            if self.count[level] >= HISTORY:
                self.history[level, :-1] = self.history[level, 1:].clone()
                self.history[level, -1] = loss
            else:
                self.history[level, self.count[level]] = loss
            self.count[level] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"history": self.history.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if tuple(state["history"].shape) != tuple(self.history.shape):
            raise ValueError(f"t-sampler history of shape {tuple(state['history'].shape)}, expected "
                             f"{tuple(self.history.shape)}")
        self.history = state["history"].double().cpu().clone()
        self.count = state["count"].long().cpu().clone()


def log_sigma_slope(process: DiscreteProcess, t: torch.Tensor) -> torch.Tensor:
    """d log sigma / dt at fractional level t (constant between levels; the right-hand slope at a level)."""
    ls = process.log_sigmas
    lo = t.to(ls.device, ls.dtype).floor().long().clamp(0, process.num_levels - 2)
    return ls[lo + 1] - ls[lo]


def continuous_levels(process: DiscreteProcess, batch: int, generator: torch.Generator, device,
                      kind: str = "importance") -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional levels t (float64) and the weights w such that E[w ||eps - eps_hat||^2] is the likelihood-
    weighted loss int ||eps - eps_hat||^2 d log sigma over [sigma_min, sigma_max] (see the module docstring)."""
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    span = process.log_sigmas[-1] - process.log_sigmas[0]
    if kind == "importance":
        t = process.t_of_sigma((process.log_sigmas[0] + u.to(process.device) * span).exp())
        return t.to(device), torch.full_like(u, float(span))
    if kind != "uniform":
        raise ValueError(f"unknown t sampling {kind!r}; choose one of {', '.join(T_SAMPLING)}")
    t = u * (process.num_levels - 1)
    return t, ((process.num_levels - 1) * log_sigma_slope(process, t)).to(device)
