"""Multistep solvers of third and fourth order in sigma-space (x_hat = x0 + sigma eps; one network evaluation per
step, the earlier ones reused), for good samples in 5-10 evaluations:

* iPNDM (Zhang & Chen 2023, as in Zhou et al. 2024): explicit Adams-Bashforth on the stored derivatives
  d = (x - D(x; sigma)) / sigma of the probability-flow ODE, order rising 1, 2, 3, 4 over the first steps;
* UniPC (Zhao et al. 2023) with B(h) = e^h - 1 ("bh2"), data prediction, up to third order: the predictor UniP and
  the corrector UniC, which reuses the evaluation at the new point (no extra evaluation), lower orders at the end
  as diffusers' UniPCMultistepScheduler (lower_order_final);
* DPM-Solver++(3M) SDE (k-diffusion's sample_dpmpp_3m_sde): exponential integrator in lambda = -log sigma with
  second and third differences of the denoised images, noise eta = 1 (eta = 0: the ODE solver DPM-Solver++(3M)).

The last step to sigma = 0 returns the denoised image D (lambda = infinity there).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..model.denoiser import Denoiser
from ..rng import ImageRNG
from .common import prior_sample, progress_bar
from .ode import _check, _denoise, sigmas_of

# Adams-Bashforth coefficients, newest derivative first (spec/beyond.md)
IPNDM_COEFFS = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def sample_ipndm(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 10,
                 sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0, max_order: int = 4,
                 clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                 callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """iPNDM: x' = x + (sigma' - sigma) sum_j c_j d_{i-j} with the Adams-Bashforth coefficients of order
    min(i + 1, max_order) (:data:`IPNDM_COEFFS`). NFE = steps."""
    _check(shape, rng)
    if max_order not in IPNDM_COEFFS:
        raise ValueError(f"iPNDM's order is 1 to 4, got {max_order}")
    sig = sigmas_of(denoiser, steps or 10, sigmas, schedule, rho)
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    history: list[torch.Tensor] = []  # derivatives, newest first
    for i in progress_bar(range(len(sig) - 1), progress, "ipndm"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        denoised = _denoise(denoiser, x, s, clip_denoised)
        history = [(x - denoised) / s, *history][:max_order]
        coeffs = IPNDM_COEFFS[len(history)]
        x = x + (s_next - s) * sum(c * d for c, d in zip(coeffs, history))
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x, "x0": denoised})
    return x


@torch.no_grad()
def sample_dpm3m_sde(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 10,
                     sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0,
                     eta: float = 1.0, s_noise: float = 1.0, clip_denoised: bool = False,
                     x_T: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
                     progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion's sample_dpmpp_3m_sde), h = lambda' - lambda, h_eta = (1 + eta) h:
    x' = (sigma'/sigma) e^{-eta h} x + (1 - e^{-h_eta}) D + phi_2 D1 - phi_3 D2 + sigma' sqrt(1 - e^{-2 eta h}) z,
    phi_2 = (e^{-h_eta} - 1) / h_eta + 1, phi_3 = phi_2 / h_eta - 1/2, D1 and D2 the first and second divided
    differences of the last three denoised images in lambda (second order on the second step, first on the first).
    NFE = steps."""
    _check(shape, rng)
    sig = sigmas_of(denoiser, steps or 10, sigmas, schedule, rho)
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    d_1 = d_2 = h_1 = h_2 = None
    for i in progress_bar(range(len(sig) - 1), progress, "dpm3m_sde"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        denoised = _denoise(denoiser, x, s, clip_denoised)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s) - math.log(s_next)
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                d1, d2 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1), (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if eta > 0:
                x = x + s_next * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise * rng.randn_like(x)
            h_1, h_2 = h, h_1
        d_1, d_2 = denoised, d_1
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x, "x0": denoised})
    return x


def _unipc_coefficients(rks: list[float], h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """UniPC's R (rows r_k^(i-1), i = 1..p) and b (bh2: B(h) = e^h - 1, data prediction) for the ratios ``rks``
    (the last one 1, the new point), as in diffusers' multistep_uni_p/c_bh_update."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial, b_h = 1, h_phi_1
    rows, b = [], []
    r = torch.tensor(rks, dtype=torch.float64)
    for i in range(1, len(rks) + 1):
        rows.append(r ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.tensor(b, dtype=torch.float64)


@torch.no_grad()
def sample_unipc(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 10,
                 sigmas: torch.Tensor | None = None, schedule: str = "karras", rho: float = 7.0, order: int = 3,
                 clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                 callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """UniPC-bh2 with data prediction (Zhao et al. 2023, Algorithms 1-2 in lambda = -log sigma): at each step the
    corrector UniC refines the point just reached with the evaluation there, then the predictor UniP of order
    min(order, step, steps left) jumps on. NFE = steps."""
    _check(shape, rng)
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC's order is 1 to 3, got {order}")
    sig = sigmas_of(denoiser, steps or 10, sigmas, schedule, rho)
    n = len(sig) - 1
    x = prior_sample(denoiser, shape, rng, float(sig[0])) if x_T is None else x_T.to(denoiser.device)
    outs: list[torch.Tensor] = []  # denoised images, newest last
    lams: list[float] = []
    x_pred_from = None  # (x before the last predictor step, its order)
    for i in progress_bar(range(n), progress, "unipc"):
        s, s_next = float(sig[i]), float(sig[i + 1])
        denoised = _denoise(denoiser, x, s, clip_denoised)
        lam = -math.log(s)
        if x_pred_from is not None:  # UniC: correct x at sigma with the evaluation there (the previous step's order)
            x_prev, p = x_pred_from
            x = _unipc_update(x_prev, outs[-p:], lams[-p:], float(sig[i - 1]), s, denoised)
        outs, lams = [*outs, denoised][-order:], [*lams, lam][-order:]
        if s_next == 0:
            x = denoised
            x_pred_from = None
        else:
            p = min(order, len(outs), n - i)
            x_pred_from = (x, p)
            x = _unipc_update(x, outs[-p:], lams[-p:], s, s_next, None)
        if callback is not None:
            callback({"i": i, "sigma": s_next, "x": x, "x0": denoised})
    return x


def _unipc_update(x: torch.Tensor, outs: list[torch.Tensor], lams: list[float], s: float, s_next: float,
                  new: torch.Tensor | None) -> torch.Tensor:
    """One UniP step (``new`` None) or UniC step (``new``: the denoised image at s_next) from x at sigma s, with the
    denoised images ``outs`` at lambdas ``lams`` (the last at s)."""
    m0, lam0 = outs[-1], lams[-1]
    h = -math.log(s_next) - lam0
    rks = [(lk - lam0) / h for lk in reversed(lams[:-1])]
    d1s = [(mk - m0) / rk for mk, rk in zip(reversed(outs[:-1]), rks)]
    h_phi_1 = math.expm1(-h)
    x_t = (s_next / s) * x - h_phi_1 * m0
    b_h = h_phi_1
    R, b = _unipc_coefficients([*rks, 1.0], h)
    if new is None:
        if not d1s:
            return x_t
        rhos = torch.tensor([0.5]) if len(d1s) == 1 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        return x_t - b_h * sum(float(rho) * d for rho, d in zip(rhos, d1s))
    rhos = torch.tensor([0.5]) if not d1s else torch.linalg.solve(R, b)
    corr = sum(float(rho) * d for rho, d in zip(rhos[:-1], d1s)) if d1s else 0.0
    return x_t - b_h * (corr + float(rhos[-1]) * (new - m0))
