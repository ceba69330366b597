"""Time-step schedules, a choice of every solver: which noise levels a sampler visits for a given number
of steps.

* ``karras``: EDM's sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (Eq. 5);
* ``logsnr``: uniform in log-SNR = -2 log sigma (DPM-Solver's "logSNR" / time-uniform-in-lambda);
* ``uniform``: the model's discrete levels evenly respaced (improved DDPM's respacing);
* ``quad``: DDIM's quadratic skip, levels (linspace(0, sqrt(0.8 T), S))^2;
* ``auto``: a schedule searched for this run, sampler and number of steps (``scorekit tune-schedule``)
  when there is one, else the sampler's own default.

Sigma-space samplers take the sigmas (decreasing, ending in 0); samplers on the discrete levels
(ancestral, predictor-corrector) take level indices (increasing). Both come from here.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SCHEDULES = ("auto", "karras", "logsnr", "uniform", "quad")


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's noise levels (Karras et al. 2022, Eq. 5): n levels from sigma_max down to sigma_min, evenly
    spaced in sigma^(1/rho), followed by 0. float64, shape (n + 1,)."""
    if n < 1:
        raise ValueError(f"need at least one step, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def even_timesteps(num_levels: int, steps: int) -> torch.Tensor:
    """``steps`` increasing levels spread evenly over 0..num_levels-1, always including both ends."""
    if not 1 <= steps <= num_levels:
        raise ValueError(f"steps must be in 1..{num_levels}, got {steps}")
    if steps == 1:
        return torch.tensor([num_levels - 1])
    return torch.linspace(0, num_levels - 1, steps, dtype=torch.float64).round().long().unique()


def quad_timesteps(num_levels: int, steps: int) -> torch.Tensor:
    """DDIM's quadratic skip: (linspace(0, sqrt(0.8 T), S))^2, as in the DDIM code (top level 0.8 T)."""
    return torch.tensor(sorted({int(v) for v in np.linspace(0, math.sqrt(num_levels * 0.8), steps) ** 2}))


def level_schedule(process, steps: int, kind: str = "uniform", rho: float = 7.0) -> torch.Tensor:
    """Increasing level indices for the samplers on the model's discrete levels. The continuous schedules
    (karras, logsnr) take the level nearest (in log sigma) to each of their sigmas; levels are unique, so a
    schedule that bunches up at one end may give fewer than ``steps`` levels."""
    n = process.num_levels
    if not 1 <= steps <= n:
        raise ValueError(f"steps must be in 1..{n}, got {steps}")
    if kind == "uniform":
        return even_timesteps(n, steps)
    if kind == "quad":
        return quad_timesteps(n, steps)
    sig = continuous_sigmas(kind, steps, process.sigma_min, process.sigma_max, rho)[:-1]
    nearest = (process.log_sigmas.cpu()[None, :] - sig.log()[:, None]).abs().argmin(1)
    return torch.unique(torch.cat([nearest, torch.tensor([n - 1])]))


def continuous_sigmas(kind: str, steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    if kind == "karras":
        return karras_sigmas(steps, sigma_min, sigma_max, rho)
    if kind == "logsnr":
        sig = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64))
        return torch.cat([sig, torch.zeros(1, dtype=torch.float64)])
    raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES[1:])}")


def sigma_schedule(denoiser, steps: int, kind: str = "karras", rho: float = 7.0) -> torch.Tensor:
    """Decreasing sigmas for the sigma-space samplers: ``steps`` levels and a final 0 (float64)."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    if kind in ("uniform", "quad"):
        process = denoiser.process
        levels = level_schedule(process, min(steps, process.num_levels), kind)
        sig = process.sigmas.cpu()[levels.flip(0)]
        return torch.cat([sig, torch.zeros(1, dtype=torch.float64)])
    return continuous_sigmas(kind, steps, denoiser.sigma_min, denoiser.sigma_max, rho)


def searched(denoiser, sampler: str, steps: int | None) -> list[float] | list[int] | None:
    """The schedule ``scorekit tune-schedule`` saved with the run for this sampler and number of steps."""
    table = getattr(denoiser, "schedules", None) or {}
    entry = table.get(f"{sampler}:{steps}")
    return entry["schedule"] if entry else None
