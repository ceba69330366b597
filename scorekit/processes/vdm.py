"""VDM's view of the VP process (Kingma, Salimans, Poole & Ho 2021): a noise schedule gamma(t) = -log SNR(t) on
t in [0, 1], alpha_t^2 = sigmoid(-gamma_t), sigma_t^2 = sigmoid(gamma_t) (Eq. 3-4).

On T levels, level i is t_i = i / (T - 1): level 0 is VDM's z_0 (the decoder's input) and level T - 1 is z_1
(the prior's). The discrete-time model on those levels is DDPM's VP chain with alphabar_i = sigmoid(-gamma(t_i))
(:func:`vp_from_gamma`), so its bound, its samplers and the codec are DDPM's; with gamma fixed to DDPM's linear
schedule's table the chain is DDPM's exactly.
"""

from __future__ import annotations

import torch

from .vp import VPProcess


def vp_from_gamma(gamma: torch.Tensor) -> VPProcess:
    """DDPM's VP chain whose alphabar at its levels is sigmoid(-gamma) (float64): beta_i = 1 - abar_i / abar_{i-1},
    abar_{-1} = 1, i.e. beta_i = 1 - sigmoid(-gamma_i) / sigmoid(-gamma_{i-1})."""
    gamma = gamma.double().cpu()
    log_abar = torch.nn.functional.logsigmoid(-gamma)
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), log_abar[:-1]])
    return VPProcess(-torch.expm1(log_abar - prev))


def gamma_of_process(process: VPProcess) -> torch.Tensor:
    """gamma_i = log((1 - abar_i) / abar_i) of a VP process's levels (float64)."""
    ab = process.alphas_cumprod.double().cpu()
    return torch.log1p(-ab) - ab.log()


class TableGamma(torch.nn.Module):
    """A fixed schedule: gamma(t) interpolated linearly between a VP process's levels t_i = i / (T - 1) (a DDPM
    schedule seen by VDM's losses); no parameters."""

    def __init__(self, process: VPProcess):
        super().__init__()
        self.register_buffer("table", gamma_of_process(process), persistent=False)

    def value_and_slope(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """gamma(t) and gamma'(t) (the slope of the segment t lies in)."""
        n = len(self.table)
        u = t.to(self.table.dtype).clamp(0, 1) * (n - 1)
        lo = u.floor().long().clamp(max=n - 2)
        step = self.table[lo + 1] - self.table[lo]
        return (self.table[lo] + step * (u - lo)).to(t.dtype), (step * (n - 1)).to(t.dtype), ()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.value_and_slope(t)[0]


@torch.no_grad()
def learned_process(gamma: torch.nn.Module, T: int) -> VPProcess:
    """The VP chain of a learned schedule on T levels t_i = i / (T - 1)."""
    p = next(gamma.parameters())
    g = gamma(torch.linspace(0, 1, T, dtype=torch.float64, device=p.device).to(p.dtype)).double()
    if not bool(torch.all(g[1:] > g[:-1])):
        raise ValueError(f"the learned schedule gamma(t) is not increasing (gamma(0) = {float(g[0]):.3g}, "
                         f"gamma(1) = {float(g[-1]):.3g})")
    return vp_from_gamma(g)


def refresh_schedule(denoiser) -> None:
    """Point a denoiser of a learned schedule at its network's current gamma (after loading or training its
    weights); any other denoiser is left as it is."""
    gamma = getattr(denoiser.net, "gamma", None)
    if gamma is None and hasattr(denoiser.net, "_orig_mod"):
        gamma = getattr(denoiser.net._orig_mod, "gamma", None)
    if gamma is None or denoiser.timestep_map is not None:
        return
    process = learned_process(gamma, denoiser.process.num_levels).to(denoiser.process.device)
    denoiser.process = denoiser._label_process = process
