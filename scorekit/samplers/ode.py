"""Deterministic and ancestral samplers for any denoiser: DDIM, Euler / Heun / RK45 on the probability-flow
ODE, DPM-Solver++(2M) and Euler-ancestral.

All but DDIM work in sigma-space, x_hat = x0 + sigma eps, where the probability-flow ODE reads
dx_hat/dsigma = (x_hat - D(x_hat; sigma)) / sigma (EDM Eq. 3-4) for VP and VE models alike; at sigma = 0,
x_hat is the data. DDIM works on the model's discrete levels, as in its paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..model.denoiser import Denoiser
from ..rng import ImageRNG
from .common import prior_sample, prior_x, progress_bar
from .rk45 import dopri5
from .schedules import level_schedule, quad_timesteps, sigma_schedule


def _check(shape: tuple[int, ...], rng: ImageRNG) -> None:
    if shape[0] != len(rng):
        raise ValueError(f"batch size {shape[0]} does not match the {len(rng)} per-image generators")


def ddim_timesteps(num_levels: int, steps: int, skip: str = "uniform") -> list[int]:
    """DDIM's subsequences of the levels 0..T-1: uniform range(0, T, T // S), or quadratic
    (linspace(0, sqrt(0.8 T), S)^2) as in the DDIM code."""
    steps = min(steps, num_levels)
    if skip == "uniform":
        return list(range(0, num_levels, max(1, num_levels // steps)))
    if skip == "quad":
        return quad_timesteps(num_levels, steps).tolist()
    raise ValueError(f"unknown DDIM skip {skip!r}; choose uniform or quad")


def _levels_as(process, t: int) -> tuple[float, float]:
    """(a_t, s_t) of a level; level -1 is the data (a = 1, s = 0)."""
    if t < 0:
        return 1.0, 0.0
    return float(process.a[t]), float(process.s[t])


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 50,
                eta: float = 0.0, skip: str = "uniform", schedule: str | None = None,
                timesteps: list[int] | None = None, clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021, Eq. 12): x_{t'} = a' x0 + sqrt(s'^2 - c^2) eps + c z with
    c = eta * a' sigma' sqrt(1 - sigma'^2 / sigma^2), the paper's sigma_t(eta) written for any process.
    eta = 0 is deterministic; eta = 1 on all levels is DDPM's ancestral sampler with fixedsmall. The levels are
    DDIM's ``skip`` (uniform or quad, as in its code), another ``schedule`` (schedules.py), or ``timesteps``."""
    _check(shape, rng)
    process = denoiser.process
    if timesteps is not None:
        seq = sorted(int(t) for t in timesteps)
    elif schedule in ("karras", "logsnr"):
        seq = level_schedule(process, min(steps or 50, process.num_levels), schedule).tolist()
    else:
        seq = ddim_timesteps(process.num_levels, steps or process.num_levels, schedule or skip)
    x = prior_x(denoiser, shape, rng, seq[-1]) if x_T is None else x_T.to(denoiser.device)
    for i, t in enumerate(progress_bar(list(reversed(seq)), progress, "ddim")):
        prev = seq[len(seq) - 2 - i] if i < len(seq) - 1 else -1
        tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
        pred = denoiser(x, tt, clip=clip_denoised)
        a, s = _levels_as(process, t)
        a1, s1 = _levels_as(process, prev)
        c = eta * s1 * math.sqrt(max(0.0, 1 - (s1 / a1) ** 2 / (s / a) ** 2)) if prev >= 0 else 0.0
        x = a1 * pred.x0 + math.sqrt(max(s1 * s1 - c * c, 0.0)) * pred.eps
        if c > 0:
            x = x + c * rng.randn_like(x)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": pred.x0})
    return x


@torch.no_grad()
def ddim_encode(denoiser: Denoiser, x0: torch.Tensor, *, steps: int = 50, skip: str = "uniform") -> torch.Tensor:
    """Deterministic DDIM (eta = 0) run forwards: data -> latent x_T, the inverse of ``sample_ddim``."""
    process = denoiser.process
    seq = ddim_timesteps(process.num_levels, steps, skip)
    x = x0.to(denoiser.device)
    prev = -1
    for t in seq:
        tt = torch.full((x.shape[0],), max(prev, 0), dtype=torch.long, device=x.device)
        if prev < 0:
            eps = torch.zeros_like(x)  # at the data there is no noise yet: x_{t0} = a x0
            x0_pred = x
        else:
            pred = denoiser(x, tt)
            eps, x0_pred = pred.eps, pred.x0
        a, s = _levels_as(process, t)
        x = a * x0_pred + s * eps
        prev = t
    return x


def _denoise(denoiser: Denoiser, x: torch.Tensor, sigma: float | torch.Tensor, clip: bool) -> torch.Tensor:
    return denoiser.denoise(x, sigma, clip=clip)


def sigmas_of(denoiser: Denoiser, steps: int, sigmas, schedule: str, rho: float) -> torch.Tensor:
    """Explicit ``sigmas`` (decreasing, ending in 0), or ``steps`` levels of ``schedule`` (schedules.py)."""
    if sigmas is not None:
        return torch.as_tensor(sigmas, dtype=torch.float64)
    return sigma_schedule(denoiser, steps, schedule, rho)


@torch.no_grad()
def sample_euler(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 50,
                 sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                 clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                 callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """Euler's method on the probability-flow ODE over EDM's sigma spacing (rho = 7); NFE = steps."""
    sig = sigmas_of(denoiser, steps or 50, sigmas, schedule, rho)
    return _edm(denoiser, shape, rng, sig, clip_denoised, x_T, callback, progress, heun=False)


@torch.no_grad()
def sample_heun(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 18,
                sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """EDM Algorithm 1 (deterministic): Heun's 2nd-order method on the probability-flow ODE, Euler for the
    last step to sigma = 0; NFE = 2 steps - 1."""
    sig = sigmas_of(denoiser, steps or 18, sigmas, schedule, rho)
    return _edm(denoiser, shape, rng, sig, clip_denoised, x_T, callback, progress, heun=True)


def _edm(denoiser, shape, rng, sig, clip, x_T, callback, progress, heun):
    _check(shape, rng)
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    for i in progress_bar(range(len(sig) - 1), progress, "heun" if heun else "euler"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        d = (x - _denoise(denoiser, x, s, clip)) / s
        x_next = x + (s_next - s) * d
        if heun and s_next > 0:
            d2 = (x_next - _denoise(denoiser, x_next, s_next, clip)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x})
    return x


@torch.no_grad()
def sample_rk45(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, rtol: float = 1e-4,
                atol: float = 1e-4, clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                callback: Callable[[dict], None] | None = None, progress: bool = False,
                steps: int | None = None) -> torch.Tensor:
    """The probability-flow ODE from sigma_max to sigma_min with adaptive Dormand-Prince steps in
    u = log sigma (dx/du = x - D(x; e^u)), then x0 = D(x; sigma_min). ``steps`` is ignored: the tolerances
    set the cost (reported through the callback as nfe)."""
    _check(shape, rng)
    s_max, s_min = denoiser.sigma_max, denoiser.sigma_min
    x = prior_sample(denoiser, shape, rng, s_max) if x_T is None else x_T.to(denoiser.device)

    def f(y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return y - _denoise(denoiser, y, u.exp(), clip_denoised)

    x, nfe = dopri5(f, x, math.log(s_max), math.log(s_min), rtol=rtol, atol=atol)
    x = _denoise(denoiser, x, s_min, clip_denoised)
    if callback is not None:
        callback({"i": 0, "sigma": 0.0, "x": x, "nfe": nfe + 1})
    return x


@torch.no_grad()
def sample_dpm2m(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 20,
                 sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                 clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                 callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in lambda = -log sigma with data prediction:
    x_{i+1} = (sigma_{i+1}/sigma_i) x_i - (e^{-h} - 1) D_i', D_i' the second-order multistep combination;
    the first step and the last (to sigma = 0) are first order. NFE = steps."""
    _check(shape, rng)
    sig = sigmas_of(denoiser, steps or 20, sigmas, schedule, rho)
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    old, h_last = None, None
    for i in progress_bar(range(len(sig) - 1), progress, "dpm2m"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        denoised = _denoise(denoiser, x, s, clip_denoised)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s) - math.log(s_next)
            d = denoised
            if old is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (s_next / s) * x - math.expm1(-h) * d
            h_last = h
        old = denoised
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x, "x0": denoised})
    return x


@torch.no_grad()
def sample_euler_ancestral(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 50,
                           sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                           eta: float = 1.0, clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                           callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """Euler-ancestral (k-diffusion): an Euler step down to sigma_down, then fresh noise of std sigma_up,
    with sigma_up^2 = eta^2 sigma'^2 (sigma^2 - sigma'^2) / sigma^2 (the posterior's) and
    sigma_down^2 = sigma'^2 - sigma_up^2. NFE = steps."""
    _check(shape, rng)
    sig = sigmas_of(denoiser, steps or 50, sigmas, schedule, rho)
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    for i in progress_bar(range(len(sig) - 1), progress, "euler_ancestral"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        denoised = _denoise(denoiser, x, s, clip_denoised)
        s_up = min(s_next, eta * math.sqrt(max(s_next**2 * (s**2 - s_next**2) / s**2, 0.0)))
        s_down = math.sqrt(max(s_next**2 - s_up**2, 0.0))
        x = x + (s_down - s) * (x - denoised) / s
        if s_up > 0:
            x = x + s_up * rng.randn_like(x)
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x, "x0": denoised})
    return x


__all__ = ["sample_ddim", "ddim_encode", "ddim_timesteps", "sample_euler", "sample_heun", "sample_rk45",
           "sample_dpm2m", "sample_euler_ancestral"]
