"""Stochastic few-step samplers in sigma-space (x_hat = x0 + sigma eps, every model alike): the injected
noise contracts the errors that a deterministic solver carries from an imperfect score to the samples.

* EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): churn, then a Heun step;
* DPM-Solver++(2M) SDE (Lu et al. 2022, "DPM-Solver++", the SDE variant of Eq. 18 with a multistep
  second-order correction);
* Restart sampling (Xu et al. 2023, Algorithm 1): Heun steps on the ODE, and inside a restart interval
  [t_min, t_max] forward-noise back up to t_max and solve down again, K times.

The papers' noise parameters are for data in [-1, 1]; for another data range they are scaled by its half
width (NCSN's [0, 1] data halves them), so they mean the same relative noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..model.denoiser import Denoiser
from ..rng import ImageRNG
from .common import prior_sample, progress_bar
from .ode import _check, _denoise, sigmas_of
from .schedules import karras_sigmas

# EDM Table 5: the stochastic sampler's parameters for the VP and VE models (CIFAR-10)
EDM_STOCHASTIC = {"vp": {"s_churn": 30.0, "s_tmin": 0.01, "s_tmax": 1.0, "s_noise": 1.007},
                  "ve": {"s_churn": 80.0, "s_tmin": 0.05, "s_tmax": 1.0, "s_noise": 1.007}}
# Restart, CIFAR-10 VP (its params_cifar10_vp.txt): 18 main Heun steps; N_restart = 3, K = 2, [0.06, 0.30]
RESTART = (3, 2, 0.06, 0.30)


def _scale(denoiser: Denoiser) -> float:
    lo, hi = denoiser.data_range
    return (hi - lo) / 2


def _heun(denoiser: Denoiser, x: torch.Tensor, s: float, s_next: float, clip: bool) -> torch.Tensor:
    """One Heun step of the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma (Euler to sigma = 0)."""
    d = (x - _denoise(denoiser, x, s, clip)) / s
    x_next = x + (s_next - s) * d
    if s_next > 0:
        d2 = (x_next - _denoise(denoiser, x_next, s_next, clip)) / s_next
        x_next = x + (s_next - s) * 0.5 * (d + d2)
    return x_next


@torch.no_grad()
def sample_edm_stochastic(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 18,
                          sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                          s_churn: float | None = None, s_tmin: float | None = None, s_tmax: float | None = None,
                          s_noise: float | None = None, clip_denoised: bool = False,
                          x_T: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
                          progress: bool = False) -> torch.Tensor:
    """EDM Algorithm 2: at sigma_i in [S_tmin, S_tmax] raise the noise to sigma_hat = (1 + gamma) sigma_i,
    gamma = min(S_churn / N, sqrt(2) - 1), with fresh noise of std S_noise sqrt(sigma_hat^2 - sigma_i^2),
    then a Heun step from sigma_hat to sigma_{i+1}. Defaults: EDM's Table 5 for the model's process
    (VP: 30, 0.01, 1, 1.007; VE: 80, 0.05, 1, 1.007). NFE = 2 steps - 1; S_churn = 0 is ``heun``."""
    _check(shape, rng)
    p = EDM_STOCHASTIC["ve" if denoiser.process.kind == "ve" else "vp"]
    s_churn = p["s_churn"] if s_churn is None else s_churn
    s_tmin = (p["s_tmin"] * _scale(denoiser)) if s_tmin is None else s_tmin
    s_tmax = (p["s_tmax"] * _scale(denoiser)) if s_tmax is None else s_tmax
    s_noise = p["s_noise"] if s_noise is None else s_noise
    sig = sigmas_of(denoiser, steps or 18, sigmas, schedule, rho)
    n = len(sig) - 1
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    for i in progress_bar(range(n), progress, "edm_stochastic"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= s <= s_tmax else 0.0
        s_hat = s * (1 + gamma)
        if gamma > 0:
            x = x + s_noise * math.sqrt(s_hat**2 - s**2) * rng.randn_like(x)
        x = _heun(denoiser, x, s_hat, s_next, clip_denoised)
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x})
    return x


@torch.no_grad()
def sample_dpm2m_sde(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 20,
                     sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                     eta: float = 1.0, s_noise: float = 1.0, clip_denoised: bool = False,
                     x_T: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
                     progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) SDE with data prediction, in lambda = -log sigma, h = lambda_{i+1} - lambda_i:
    x' = (sigma'/sigma) e^{-eta h} x + (1 - e^{-(1 + eta) h}) D_i + (1/2)(1 - e^{-(1 + eta) h}) (D_i - D_{i-1}) / r
    + sigma' sqrt(1 - e^{-2 eta h}) S_noise z, r = h_{i-1} / h_i (the second-order "midpoint" correction,
    absent on the first step; the last step to sigma = 0 returns D). eta = 0 is ``dpm2m``. NFE = steps."""
    _check(shape, rng)
    sig = sigmas_of(denoiser, steps or 20, sigmas, schedule, rho)
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    old, h_last = None, None
    for i in progress_bar(range(len(sig) - 1), progress, "dpm2m_sde"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        denoised = _denoise(denoiser, x, s, clip_denoised)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s) - math.log(s_next)
            decay = -math.expm1(-(1 + eta) * h)
            x = (s_next / s) * math.exp(-eta * h) * x + decay * denoised
            if old is not None:
                x = x + 0.5 * decay * (h / h_last) * (denoised - old)
            if eta > 0:
                x = x + s_next * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise * rng.randn_like(x)
            h_last = h
        old = denoised
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x, "x0": denoised})
    return x


@torch.no_grad()
def sample_restart(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 18,
                   sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                   restart: tuple[int, int, float, float] | None = None, s_noise: float = 1.0,
                   clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                   callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """Restart sampling (Xu et al. 2023): Heun steps down the main schedule; when it reaches the level
    nearest t_min, K times: add forward noise to go back up to t_max, x <- x + S_noise sqrt(t_max^2 - t_min^2) z,
    and solve the ODE down to t_min again with N_restart Heun steps (EDM spacing). ``restart`` =
    (N_restart, K, t_min, t_max); default the paper's CIFAR-10 VP setting (3, 2, 0.06, 0.30), scaled to the
    data range. NFE = 2 steps - 1 + K (2 N_restart)."""
    _check(shape, rng)
    n_restart, k_times, t_min, t_max = restart or (RESTART[0], RESTART[1], RESTART[2] * _scale(denoiser),
                                                    RESTART[3] * _scale(denoiser))
    sig = sigmas_of(denoiser, steps or 18, sigmas, schedule, rho)
    positive = sig[:-1]
    at = int((positive - t_min).abs().argmin())  # the main level where the restarts happen
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    for i in progress_bar(range(len(sig) - 1), progress, "restart"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        x = _heun(denoiser, x, s, s_next, clip_denoised)
        if i + 1 == at and k_times > 0 and t_max > s_next:
            ladder = karras_sigmas(n_restart + 1, s_next, t_max, rho)[:-1]  # t_max down to this level
            for _ in range(k_times):
                x = x + s_noise * math.sqrt(t_max**2 - s_next**2) * rng.randn_like(x)
                for j in range(len(ladder) - 1):
                    x = _heun(denoiser, x, float(ladder[j]), float(ladder[j + 1]), clip_denoised)
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x})
    return x
