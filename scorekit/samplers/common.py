"""Helpers shared by the samplers: progress bars and respacing of discrete levels."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..denoiser import Denoiser
from ..progress import progress


def progress_bar(items: Iterable, enabled: bool, desc: str) -> Iterable:
    """A sampler's loop with progress (tqdm on a terminal, plain lines on a pipe), or the bare loop."""
    return progress(items, desc=desc, unit="step", enabled=enabled, leave=False) if enabled else items


def even_timesteps(num_levels: int, steps: int) -> torch.Tensor:
    """``steps`` increasing levels spread evenly over 0..num_levels-1, always including both ends."""
    if not 1 <= steps <= num_levels:
        raise ValueError(f"steps must be in 1..{num_levels}, got {steps}")
    if steps == 1:
        return torch.tensor([num_levels - 1])
    return torch.linspace(0, num_levels - 1, steps, dtype=torch.float64).round().long().unique()


def respace(denoiser: Denoiser, steps: int | None) -> Denoiser:
    """The denoiser on ``steps`` evenly spaced levels (itself when ``steps`` is None or all levels)."""
    if steps is None or steps == denoiser.process.num_levels:
        return denoiser
    return denoiser.respaced(even_timesteps(denoiser.process.num_levels, steps))


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's noise levels (Karras et al. 2022, Eq. 5): n levels from sigma_max down to sigma_min, evenly
    spaced in sigma^(1/rho), followed by 0. float64, shape (n + 1,)."""
    if n < 1:
        raise ValueError(f"need at least one step, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def prior_x(denoiser: Denoiser, shape: tuple[int, ...], rng, t: int) -> torch.Tensor:
    """x_t at level t from the prior, N(0, a_t^2 prior_data_variance + s_t^2) (VP: N(0, I); VE: N(0, sigma_t^2))."""
    p = denoiser.process
    std = (float(p.a[t]) ** 2 * p.prior_data_variance + float(p.s[t]) ** 2) ** 0.5
    return rng.randn(*shape[1:]).to(denoiser.device) * std


def prior_std_hat(denoiser: Denoiser, sigma: float) -> float:
    """Std of the prior of x_hat = x0 + sigma eps: sqrt(sigma^2 + the data variance the process's prior
    assumes) (VP: sqrt(1 + sigma^2), i.e. N(0, I) for x_t; VE: sigma)."""
    return (sigma**2 + denoiser.process.prior_data_variance) ** 0.5


def prior_sample(denoiser: Denoiser, shape: tuple[int, ...], rng, sigma: float) -> torch.Tensor:
    """x_hat at noise level sigma drawn from the prior in sigma-space."""
    return rng.randn(*shape[1:]).to(denoiser.device) * prior_std_hat(denoiser, sigma)
