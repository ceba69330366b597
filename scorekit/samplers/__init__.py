"""Samplers: plain functions ``sample_x(denoiser, shape, rng, *, steps, callback, progress, ...)``.

:func:`sample` runs one by name, passing it the options it accepts (a sampler ignores the others), so
every sampler can be driven from one :class:`~scorekit.config.SamplingConfig`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from ..denoiser import Denoiser
from ..rng import ImageRNG
from .ancestral import sample_ancestral
from .consistency import sample_consistency
from .langevin import sample_langevin, sample_pc
from .ode import sample_ddim, sample_dpm2m, sample_euler, sample_euler_ancestral, sample_heun, sample_rk45
from .schedules import searched
from .stochastic import sample_dpm2m_sde, sample_edm_stochastic, sample_restart

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ancestral": sample_ancestral,  # DDPM Algorithm 2
    "langevin": sample_langevin,  # NCSN Algorithm 1 (+ NCSNv2's denoising step)
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "rk45": sample_rk45,
    "dpm2m": sample_dpm2m,
    "pc": sample_pc,
    "euler_ancestral": sample_euler_ancestral,
    "edm_stochastic": sample_edm_stochastic,  # EDM Algorithm 2
    "dpm2m_sde": sample_dpm2m_sde,  # DPM-Solver++(2M) SDE
    "restart": sample_restart,  # Restart sampling (Xu et al. 2023)
    "consistency": sample_consistency,  # multistep consistency sampling (Song et al. 2023, Algorithm 1)
}
DISCRETE = ("ancestral", "pc", "ddim")  # samplers on the model's levels (schedules give level indices)


def sampling_options(sc) -> dict:
    """Sampler options from a SamplingConfig (steps 0 means the sampler's default)."""
    return {"steps": sc.steps or None, "clip_denoised": sc.clip_denoised, "n_steps_each": sc.n_steps_each,
            "step_lr": sc.step_lr, "denoise": sc.denoise, "schedule": sc.schedule}


def accepted_options(name: str, options: dict) -> dict:
    """The subset of ``options`` that sampler ``name`` takes."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    params = inspect.signature(SAMPLERS[name]).parameters
    return {k: v for k, v in options.items() if k in params}


def resolve_schedule(denoiser: Denoiser, name: str, options: dict) -> dict:
    """``schedule="auto"``: the schedule searched for this run, sampler and steps (sigmas, or levels for the
    discrete samplers) when ``scorekit tune-schedule`` saved one, else the sampler's own default."""
    options = dict(options)
    if options.get("schedule", "auto") != "auto" or "sigmas" in options or "timesteps" in options:
        return options
    options.pop("schedule", None)
    found = searched(denoiser, name, options.get("steps"))
    if found is not None:
        options["timesteps" if name in DISCRETE else "sigmas"] = found
    return options


def sample(denoiser: Denoiser, name: str, shape: tuple[int, ...], rng: ImageRNG, **options) -> torch.Tensor:
    return SAMPLERS[name](denoiser, shape, rng, **accepted_options(name, resolve_schedule(denoiser, name, options)))


__all__ = ["SAMPLERS", "accepted_options", "sample", "sampling_options", *[f.__name__ for f in SAMPLERS.values()]]
