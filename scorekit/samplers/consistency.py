"""Multistep consistency sampling (Song, Dhariwal, Chen & Sutskever 2023, Algorithm 1).

A consistency function f(x, sigma) maps a point of a probability-flow ODE trajectory straight to its end at
sigma_min. One evaluation from the prior gives a sample; each further step re-noises that sample to a smaller
level tau and maps it back:

    x = f(x_T, sigma_max), x_T ~ prior;  for tau_1 > ... > tau_{K-1}:  x = f(x + sqrt(tau^2 - sigma_min^2) z, tau)

K network evaluations in all. The levels come as ``sigmas`` = [sigma_max, tau_1, ..., tau_{K-1}, 0], the form
of every sigma-space sampler (so ``scorekit tune-schedule`` searches them like any other schedule); by default
EDM's rho spacing of K + 1 levels between sigma_max and sigma_min, without the last one (a re-noising to
sigma_min would change nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..model.denoiser import Denoiser
from ..rng import ImageRNG
from .common import prior_sample, progress_bar
from .schedules import continuous_sigmas

SCHEDULES = ("karras", "logsnr")  # the spacings of the re-noising levels (schedules.py)


def consistency_sigmas(denoiser: Denoiser, steps: int, rho: float = 7.0, schedule: str = "karras") -> torch.Tensor:
    """The levels of ``steps``-step consistency sampling, [sigma_max, tau_1, ..., tau_{K-1}, 0]: ``steps`` + 1 levels
    of ``schedule`` (EDM's rho spacing by default, or uniform in log-SNR) from sigma_max to sigma_min, the last
    dropped."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    if schedule not in SCHEDULES:
        raise ValueError(f"consistency sampling spaces its levels by {' or '.join(SCHEDULES)}, got {schedule!r}")
    grid = continuous_sigmas(schedule, steps + 1, denoiser.sigma_min, denoiser.sigma_max, rho)
    return torch.cat([grid[:steps], torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def sample_consistency(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 2,
                       sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                       clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                       callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """Multistep consistency sampling (Algorithm 1 of Song et al. 2023) with ``steps`` evaluations of the model's
    consistency function (:meth:`Denoiser.consistency_fn`; a model that is not a consistency model is used
    through the same view, f = x + (1 - sigma_min / sigma)(D - x)). ``steps=None``: 2; levels from ``sigmas``, or
    spaced by ``schedule`` (karras or logsnr)."""
    if shape[0] != len(rng):
        raise ValueError(f"batch size {shape[0]} does not match the {len(rng)} per-image generators")
    sig = torch.as_tensor(sigmas, dtype=torch.float64) if sigmas is not None else consistency_sigmas(
        denoiser, 2 if steps is None else steps, rho, schedule)
    levels = [float(s) for s in sig if s > 0]
    if not levels or any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"consistency sampling needs decreasing positive levels, got {sig.tolist()}")
    s_min = denoiser.sigma_min
    x = prior_sample(denoiser, shape, rng, levels[0]) if x_T is None else x_T.to(denoiser.device)
    for i, tau in enumerate(progress_bar(levels, progress, "consistency")):
        if i > 0:
            x = x + math.sqrt(max(tau * tau - s_min * s_min, 0.0)) * rng.randn_like(x)
        x = denoiser.consistency_fn(x, torch.full((shape[0],), tau, dtype=torch.float64, device=x.device))
        if clip_denoised:
            x = x.clamp(*denoiser.data_range)
        if callback is not None:
            callback({"i": i, "sigma": tau, "x": x, "x0": x})
    return x
