"""Likelihood in bits/dim: DDPM's variational bound (the authors' ``calc_bpd_loop``) and the exact likelihood
of the probability-flow ODE (instantaneous change of variables), for any denoiser."""

from __future__ import annotations

import math

import torch

from ..images import value_edges
from ..model.denoiser import Denoiser
from ..processes.base import normal_kl
from ..rng import ImageRNG
from ..samplers.common import progress_bar


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def _log_prob_between(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Phi(hi) - Phi(lo)) for lo < hi, evaluated on the side of 0 where it does not cancel."""
    flip = lo > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_b = torch.special.log_ndtr(b)
    return log_b + torch.log1p(-torch.exp(torch.special.log_ndtr(a) - log_b).clamp(max=1.0 - 1e-12))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        data_range: tuple[float, float] = (-1.0, 1.0), levels: int = 256
                                        ) -> torch.Tensor:
    """log p(x | mean, exp(log_scale)) of 8-bit data under DDPM's decoder (Eq. 13), elementwise.

    256 bins of width (hi - lo)/255 centred on the data values, the outermost extended to -inf / +inf;
    probabilities are floored at 1e-12 as in the authors' code. ``levels``: 2^b bins of width (hi - lo)/(2^b - 1)
    for b-bit data (Glow's n_bits; 16-bit images).
    """
    lo, hi = data_range
    half_bin = (hi - lo) / (levels - 1) / 2.0
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + half_bin) * inv_std
    lower = (x - mean - half_bin) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    mid = _log_prob_between(lower, upper)
    eps = half_bin * 0.999  # x within the first / last bin
    out = torch.where(x < lo + eps, log_cdf_upper, torch.where(x > hi - eps, log_sf_lower, mid))
    return out.clamp_min(math.log(1e-12))


def even_values(k: int) -> list[int]:
    """K grey levels spread evenly over 0..255: round(i * 255 / (K - 1)) (8-bit files of data with K levels)."""
    return [int(math.floor(i * 255 / (k - 1) + 0.5)) for i in range(k)]


def pixel_bits(denoiser) -> int:
    """The bit depth of the model's files (``data.bits``; 8 without a config)."""
    cfg = getattr(denoiser, "config", None)
    return int(getattr(cfg.data, "bits", 8)) if cfg is not None else 8


def pixel_max(denoiser) -> int:
    """The largest pixel value of the model's files: 255, or 2^b - 1 for b > 8 bits."""
    b = pixel_bits(denoiser)
    return 2**b - 1 if b > 8 else 255


def data_values(denoiser) -> torch.Tensor | None:
    """The uint8 values the model's data take (``data.values``, or the 2^b levels of ``data.bits`` b < 8), or None
    for all 256 (and for data of more than 8 bits, whose decoder has 2^b even bins)."""
    cfg = getattr(denoiser, "config", None)
    values = cfg.data.values if cfg is not None else None
    if pixel_bits(denoiser) < 8:
        values = even_values(2 ** pixel_bits(denoiser))
    return torch.tensor(values, dtype=torch.long) if values and len(values) < 256 else None


def first_off_values(u8: torch.Tensor, values: torch.Tensor) -> tuple[int, int] | None:
    """(image index, pixel value) of the first image in the batch ``u8`` with a value outside ``values``, or None."""
    inside = torch.zeros(256, dtype=torch.bool)
    inside[values] = True
    off = ~inside[u8.long()]
    if not bool(off.any()):
        return None
    i = int(off.flatten(1).any(1).nonzero()[0])
    return i, int(u8[i][off[i]][0])


def discretized_log_likelihood_on_values(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                         values: torch.Tensor, data_range: tuple[float, float]) -> torch.Tensor:
    """log p(x | mean, exp(log_scale)) of data that take only ``values`` (uint8): DDPM's decoder (Eq. 13) with one
    bin per value, each reaching half-way to its neighbours (Glow's n_bits generalised to any set of levels);
    floored at 1e-12 as the 8-bit decoder. ``x`` holds data values (in ``data_range``)."""
    _, edges = value_edges(values, data_range)
    edges = edges.clamp(-1e6, 1e6).to(x.device)  # finite outer edges: no inf * 0 = NaN in the gradients
    k = torch.bucketize(x.double().contiguous(), edges[1:-1])  # the bin of each pixel
    inv_std = torch.exp(-log_scale.double())
    lower = (edges[k] - mean.double()) * inv_std
    upper = (edges[k + 1] - mean.double()) * inv_std
    out = _log_prob_between(lower, upper).to(mean.dtype)
    return out.clamp_min(math.log(1e-12))


def vb_terms_bpd(denoiser: Denoiser, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, *,
                 clip: bool = False, raw: torch.Tensor | None = None, y: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """L_{t-1} = KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 0 and the decoder NLL L_0 = -log p(x0|x1)
    at t = 0 (DDPM Eq. 5), per image in bits/dim; also returns the predicted x0."""
    true_mean, _, true_log_var = denoiser.process.q_posterior(x0, x_t, t)
    mean, log_var, x0_pred = denoiser.p_mean_variance(x_t, t, clip=clip, raw=raw, y=y)
    kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
    values = data_values(denoiser)
    if values is None:
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var, denoiser.data_range,
                                                             pixel_max(denoiser) + 1))
    else:
        nll = -mean_flat(discretized_log_likelihood_on_values(x0, mean, 0.5 * log_var, values, denoiser.data_range))
    return torch.where(t.to(kl.device) == 0, nll / math.log(2.0), kl), x0_pred


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
    from ..samplers.common import prior_std_hat
    from ..samplers.rk45 import dopri5

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
