"""Helpers shared by the samplers: progress, respacing of discrete levels, draws from the prior."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..model.denoiser import Denoiser
from ..progress import progress
from .schedules import level_schedule


def progress_bar(items: Iterable, enabled: bool, desc: str) -> Iterable:
    """A sampler's loop with progress (tqdm on a terminal, plain lines on a pipe), or the bare loop."""
    return progress(items, desc=desc, unit="step", enabled=enabled, leave=False) if enabled else items


def respace(denoiser: Denoiser, steps: int | None, schedule: str = "uniform",
            timesteps: list[int] | torch.Tensor | None = None) -> Denoiser:
    """The denoiser on ``steps`` of its levels chosen by ``schedule`` (or on explicit ``timesteps``); itself when
    every level is used (improved DDPM's respacing)."""
    if timesteps is None:
        if steps is None or (steps == denoiser.process.num_levels and schedule == "uniform"):
            return denoiser
        timesteps = level_schedule(denoiser.process, steps, schedule)
    timesteps = torch.as_tensor(timesteps, dtype=torch.long)
    if len(timesteps) == denoiser.process.num_levels:
        return denoiser
    return denoiser.respaced(timesteps)


def prior_x(denoiser: Denoiser, shape: tuple[int, ...], rng, t: int) -> torch.Tensor:
    """x_t at level t from the prior, a_t times the prior of x_hat (VP and flow: N(0, I); VE: N(0, sigma_t^2))."""
    p = denoiser.process
    a, s, sigma = float(p.a[t]), float(p.s[t]), float(p.sigmas[t])
    std = (a**2 * (p.prior_var_hat(sigma) - sigma**2) + s**2) ** 0.5
    return rng.randn(*shape[1:]).to(denoiser.device) * std


def prior_std_hat(denoiser: Denoiser, sigma: float) -> float:
    """Std of the prior of x_hat = x0 + sigma eps (VP: sqrt(1 + sigma^2), i.e. N(0, I) for x_t; VE: sigma; flow:
    1 + sigma, N(0, I) for x_tau)."""
    return denoiser.process.prior_var_hat(sigma) ** 0.5


def prior_sample(denoiser: Denoiser, shape: tuple[int, ...], rng, sigma: float) -> torch.Tensor:
    """x_hat at noise level sigma drawn from the prior in sigma-space."""
    return rng.randn(*shape[1:]).to(denoiser.device) * prior_std_hat(denoiser, sigma)
