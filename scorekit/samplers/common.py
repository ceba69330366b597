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
