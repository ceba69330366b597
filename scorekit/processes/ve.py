"""NCSN's variance-exploding process (Song & Ermon 2019/2020) and the continuous VE-SDE.

x~ = x0 + sigma_i z over a ladder sigma_1 > ... > sigma_L. The authors index the ladder with i = 0 for
the largest sigma; scorekit's processes share DDPM's order instead (t = 0 the least noise), so
t = L - 1 - i. :meth:`VEProcess.net_label` is the one place that converts (the NCSN v1 network is
conditioned on the authors' index).
"""

from __future__ import annotations

import math

import torch

from .base import DiscreteProcess

LADDERS = ("geometric", "uniform")


def sigma_ladder(sigma_begin: float, sigma_end: float, num_levels: int, kind: str = "geometric") -> torch.Tensor:
    """sigma_1 > ... > sigma_L in the authors' order, float64 (geometric: exp(linspace(log s1, log sL, L)))."""
    if not sigma_begin > sigma_end > 0:
        raise ValueError(f"need sigma_begin > sigma_end > 0, got {sigma_begin} and {sigma_end}")
    if num_levels < 2:
        raise ValueError(f"need at least 2 noise levels, got {num_levels}")
    if kind == "geometric":
        return torch.linspace(math.log(sigma_begin), math.log(sigma_end), num_levels, dtype=torch.float64).exp()
    if kind == "uniform":
        return torch.linspace(sigma_begin, sigma_end, num_levels, dtype=torch.float64)
    raise ValueError(f"unknown sigma ladder {kind!r}; choose one of {', '.join(LADDERS)}")


class VEProcess(DiscreteProcess):
    """Discrete VE process; q(x_{t-1} | x_t, x0) is the Brownian-bridge posterior between the levels.

    With sigma' = sigma_{t-1} (0 below the lowest level): mean = (1 - r) x0 + r x_t, r = sigma'^2/sigma^2,
    variance sigma'^2 (sigma^2 - sigma'^2) / sigma^2; the step variance is sigma^2 - sigma'^2 (the
    reverse-diffusion predictor of the score-SDE paper), the analogue of DDPM's beta_t.
    """

    kind = "ve"

    def __init__(self, sigmas_desc: torch.Tensor):
        sig_desc = torch.as_tensor(sigmas_desc, dtype=torch.float64)
        self.sigmas_desc = sig_desc  # the authors' order, sigma_1 first
        sig = sig_desc.flip(0)
        prev = torch.cat([torch.zeros(1, dtype=torch.float64), sig[:-1]])
        r = prev**2 / sig**2
        self.prior_std = float(sig[-1])
        super().__init__(
            a=torch.ones_like(sig),
            s=sig.clone(),
            posterior_mean_coef1=1.0 - r,
            posterior_mean_coef2=r,
            posterior_variance=prev**2 * (sig**2 - prev**2) / sig**2,
            step_variance=sig**2 - prev**2,
        )

    @classmethod
    def from_ladder(cls, sigma_begin: float, sigma_end: float, num_levels: int,
                    kind: str = "geometric") -> VEProcess:
        return cls(sigma_ladder(sigma_begin, sigma_end, num_levels, kind))

    def scale_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma)

    def net_label(self, t: torch.Tensor) -> torch.Tensor:
        """The authors' level index i = L - 1 - t (i = 0 is sigma_1, the largest)."""
        return (self.num_levels - 1) - t

    def t_of_label(self, label: torch.Tensor) -> torch.Tensor:
        return (self.num_levels - 1) - label

    def subset(self, timesteps: torch.Tensor) -> VEProcess:
        return VEProcess(self.sigmas.cpu()[torch.as_tensor(timesteps).long().cpu()].flip(0))


class VESDE:
    """Continuous VE-SDE: dx = sqrt(d sigma^2/dt) dw, sigma(t) = sigma_min (sigma_max/sigma_min)^t."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = self.sigma(t)
        return torch.ones_like(sigma), sigma

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), g
