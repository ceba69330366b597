"""Samplers: plain functions ``sample_x(denoiser, shape, rng, *, steps, callback, progress, ...)``.

:func:`sample` runs one by name, passing it the options it accepts (a sampler ignores the others), so
every sampler can be driven from one :class:`~scorekit.config.SamplingConfig`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from ..model.denoiser import Denoiser
from ..model.meanflow import is_mean_flow
from ..rng import ImageRNG
from .ancestral import sample_ancestral
from .consistency import SCHEDULES as CONSISTENCY_SCHEDULES
from .consistency import sample_consistency
from .langevin import sample_langevin, sample_pc
from .meanflow import sample_meanflow
from .multistep import sample_dpm3m_sde, sample_ipndm, sample_unipc
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
    "ipndm": sample_ipndm,  # improved PNDM (Zhang & Chen 2023): Adams-Bashforth up to fourth order
    "unipc": sample_unipc,  # UniPC-bh2 (Zhao et al. 2023), predictor-corrector up to third order
    "dpm3m_sde": sample_dpm3m_sde,  # DPM-Solver++(3M) SDE (k-diffusion)
    "meanflow": sample_meanflow,  # MeanFlow's jumps along the average velocity (Geng et al. 2025, Algorithm 2)
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


def unhonoured(denoiser: Denoiser, name: str, *, steps: int | None = None, schedule: str | None = None
               ) -> tuple[str, str] | None:
    """What sampler ``name`` cannot do of what was asked (``steps`` and ``schedule`` as a user gave them; None: not
    given): (the option at fault, ``steps`` / ``schedule`` / ``sampler``, and why), or None. A caller that gets a
    reason refuses, naming the option and its value, rather than let the sampler drop or change it."""
    if name not in SAMPLERS:
        return "sampler", f"unknown; choose one of {', '.join(SAMPLERS)}"
    levels = denoiser.process.num_levels
    if steps is not None and steps < 1:
        return "steps", "must be at least 1 (leave it out for the sampler's default)"
    if steps is not None and name == "rk45":
        return "steps", "rk45 chooses its own steps from its tolerances (rtol, atol); leave --steps out"
    if steps and name in DISCRETE and steps > levels:
        return "steps", f"the {name} sampler runs on the model's {levels} noise levels, so at most {levels}"
    if schedule not in (None, "auto"):
        if "schedule" not in inspect.signature(SAMPLERS[name]).parameters:
            return "schedule", f"the {name} sampler takes no time-step schedule"
        if name == "consistency" and schedule not in CONSISTENCY_SCHEDULES:
            return "schedule", (f"consistency sampling spaces its levels by {' or '.join(CONSISTENCY_SCHEDULES)} "
                                "(the model's discrete levels do not apply)")
    if name == "meanflow" and not is_mean_flow(denoiser):
        return "sampler", "meanflow jumps along a MeanFlow model's average velocity (model.mean_flow: true)"
    top = denoiser.trained_top
    start = float(denoiser.process.sigma_max)
    if top and name in (*DISCRETE, "langevin") and start > top * (1 + 1e-6):
        return "sampler", (f"the {name} sampler starts at the process's top level (sigma {start:.3g}), above the "
                           f"{top:.3g} this model was trained up to; use a sigma-space sampler (euler, heun, dpm2m, "
                           f"{'consistency, ' if denoiser.consistency else ''}...)")
    return None


def sample(denoiser: Denoiser, name: str, shape: tuple[int, ...], rng: ImageRNG, **options) -> torch.Tensor:
    steps = options.get("steps")
    if steps is not None and steps < 1:
        raise ValueError(f"steps {steps}: must be at least 1 (None: the sampler's default)")
    return SAMPLERS[name](denoiser, shape, rng, **accepted_options(name, resolve_schedule(denoiser, name, options)))


__all__ = ["SAMPLERS", "accepted_options", "sample", "sampling_options", "unhonoured",
           *[f.__name__ for f in SAMPLERS.values()]]
