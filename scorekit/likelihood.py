"""Likelihood in bits/dim: DDPM's variational bound (the authors' ``calc_bpd_loop``) and the exact likelihood
of the probability-flow ODE (instantaneous change of variables), for any denoiser."""

from __future__ import annotations

import math

import torch

from .denoiser import Denoiser
from .losses import mean_flat, vb_terms_bpd
from .rng import ImageRNG
from .samplers.common import progress_bar


@torch.no_grad()
def vlb_bpd(denoiser: Denoiser, x0: torch.Tensor, rng: ImageRNG, *, clip_denoised: bool = True,
            progress: bool = False) -> dict[str, torch.Tensor]:
    """The full bound L_T + sum_t L_{t-1} + L_0 per image (DDPM Eq. 5), in bits/dim.

    Every term draws its own x_t ~ q(x_t | x0) from the image's generator. Returns ``total`` (B,),
    ``terms`` (B, T) with terms[:, t] = L_t (L_0 the decoder NLL), ``prior`` (B,) = L_T, and ``mse``
    (B, T): the mean squared error of the predicted x0 at each t (for rate-distortion curves).
    """
    if x0.shape[0] != len(rng):
        raise ValueError(f"batch size {x0.shape[0]} does not match the {len(rng)} per-image generators")
    process = denoiser.process
    device = denoiser.device
    x0 = x0.to(device)
    B, T = x0.shape[0], process.num_levels
    terms = torch.zeros(B, T, dtype=torch.float64, device=device)
    mse = torch.zeros(B, T, dtype=torch.float64, device=device)
    for t in progress_bar(range(T - 1, -1, -1), progress, "bits/dim"):
        tt = torch.full((B,), t, dtype=torch.long, device=device)
        x_t = process.q_sample(x0, tt, rng.randn_like(x0))
        term, x0_pred = vb_terms_bpd(denoiser, x0, x_t, tt, clip=clip_denoised)
        terms[:, t] = term.double()
        mse[:, t] = mean_flat((x0_pred - x0) ** 2).double()
    prior = process.prior_kl_bpd(x0.double())
    return {"total": terms.sum(1) + prior, "terms": terms, "prior": prior, "mse": mse}


def _divergence(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, probe: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """D(x; sigma) and the divergence of x -> D(x; sigma) per image: exact (one vector-Jacobian product
    per dimension) when ``probe`` is None, else Hutchinson's z^T (dD/dx) z."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        den = denoiser.denoise(x, sigma)
        if probe is not None:
            (vjp,) = torch.autograd.grad((den * probe).sum(), x)
            return den.detach(), (vjp * probe).flatten(1).sum(1)
        flat = den.flatten(1)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(flat.shape[1]):
            (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < flat.shape[1] - 1)
            div = div + g.flatten(1)[:, i]
        return den.detach(), div


def ode_log_likelihood(denoiser: Denoiser, x: torch.Tensor, rng: ImageRNG, *, trace: str = "hutchinson",
                       probe: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5) -> dict[str, torch.Tensor]:
    """log p_{sigma_min}(x) in nats per image through the probability-flow ODE (Song et al. 2021, Sec. D.2).

    In u = log sigma the ODE is dx/du = g(x, u) = x - D(x; e^u); integrating x from sigma_min to sigma_max
    together with the divergence gives log p_{sigma_min}(x) = log N(x(sigma_max); 0, (sigma_max^2 + c) I)
    + int div g du, with c the data variance the process's prior assumes (VP: 1; VE: 0). The divergence is
    exact (``trace="exact"``, D backward passes per evaluation) or Hutchinson's estimate with a fixed
    Rademacher or Gaussian probe per image (``trace="hutchinson"``), drawn from the image's generator so
    the result is deterministic given the seed. Adaptive Dormand-Prince steps, per image.
    """
    from .samplers.common import prior_std_hat
    from .samplers.rk45 import dopri5

    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be exact or hutchinson, got {trace!r}")
    x = x.to(denoiser.device)
    B, shape, D = x.shape[0], x.shape[1:], x[0].numel()
    z = None
    if trace == "hutchinson":
        z = rng.randn_like(x) if probe == "gaussian" else (rng.rand_like(x) < 0.5).to(x.dtype) * 2 - 1
    s_min, s_max = denoiser.sigma_min, denoiser.sigma_max

    def f(state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        xs = state[:, :D].reshape(B, *shape)
        den, div_d = _divergence(denoiser, xs, u.exp(), z)
        g = (xs - den).flatten(1)
        return torch.cat([g, (D - div_d)[:, None].to(g.dtype)], dim=1)

    state0 = torch.cat([x.flatten(1), torch.zeros(B, 1, dtype=x.dtype, device=x.device)], dim=1)
    state, nfe = dopri5(f, state0, math.log(s_min), math.log(s_max), rtol=rtol, atol=atol)
    x_end, integral = state[:, :D], state[:, D]
    var = prior_std_hat(denoiser, s_max) ** 2
    prior = -0.5 * (x_end.double() ** 2).sum(1) / var - 0.5 * D * math.log(2 * math.pi * var)
    return {"logp": prior + integral.double(), "prior": prior, "nfe": torch.tensor(nfe)}


def ode_bpd(denoiser: Denoiser, images_u8: torch.Tensor, rng: ImageRNG, *, dequantize: bool = True,
            **kwargs) -> dict[str, torch.Tensor]:
    """Bits/dim of 8-bit images through the ODE likelihood, with the 8-bit data model explicit:
    y = (u8 + U) / 256 with U ~ Uniform[0, 1)^D (uniform dequantization; U = 1/2 without), mapped to the
    model's range x = lo + (hi - lo) y, so that -log2 P(u8) <= -log2 p_x(x) / D + 8 - log2(hi - lo) per
    dimension (the change of scale from [0, 256) to the model's range; [-1, 1] gives + 7, as in the
    score-SDE code)."""
    lo, hi = denoiser.data_range
    u = rng.rand(*images_u8.shape[1:]) if dequantize else torch.full(images_u8.shape, 0.5)
    y = (images_u8.float() + u.to(images_u8.device)) / 256.0
    x = lo + (hi - lo) * y
    out = ode_log_likelihood(denoiser, x, rng, **kwargs)
    D = images_u8[0].numel()
    bpd = -out["logp"] / (D * math.log(2.0)) + 8.0 - math.log2(hi - lo)
    return {"bpd": bpd, **out}
