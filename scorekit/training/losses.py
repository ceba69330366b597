"""Training objectives: DDPM's L_simple, the variational bound's terms (from :mod:`scorekit.evaluation.likelihood`) and
MSEs; NCSN's denoising score matching; EDM's preconditioned loss; the likelihood-weighted score-matching loss."""

from __future__ import annotations

import math

import torch

from ..config import BOUND_LOSSES
from ..evaluation.likelihood import mean_flat, vb_terms_bpd
from ..model.denoiser import Denoiser, Output
from ..model.precond import edm_weight
from ..processes.base import expand_like
from .tsampling import log_sigma_slope


def mse_target(denoiser: Denoiser, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
               eps: torch.Tensor) -> torch.Tensor:
    """The network's regression target for its output type (eps, x0, posterior mean, score, sigma*score)."""
    out = denoiser.output
    if out is Output.EPS:
        return eps
    if out is Output.X0:
        return x0
    if out is Output.VELOCITY:
        return eps - x0
    if out is Output.MEAN:
        return denoiser.process.q_posterior(x0, x_t, t)[0]
    if out is Output.V:  # (eps - sigma x0) / sqrt(1 + sigma^2), sigma = s / a (VP: a eps - s x0)
        a, s = denoiser.process.alpha_s(t)
        sig = expand_like(s / a, eps)
        return (eps - sig * x0) / (1 + sig**2).sqrt()
    _, s = denoiser.process.alpha_s(t)
    return -eps / expand_like(s, eps) if out is Output.SCORE else -eps


def ddpm_loss(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, loss_type: str = "mse",
              hybrid_weight: float = 0.001, y: torch.Tensor | None = None,
              aug: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image DDPM objective at levels t with noise eps.

    ``mse``: unweighted MSE of the output against its target, mean over pixels (L_simple, Eq. 14, for
    eps; the code's x0 / mean variants); ``kl``: the true bound's term (Eq. 5); ``hybrid``: improved
    DDPM's L_simple + hybrid_weight * L_vlb with the mean detached in L_vlb (learned variance); ``vlb`` is
    ``kl`` (improved DDPM's name; with importance sampling of t, see :mod:`scorekit.tsampling`).
    ``aug``: augmentation parameters the network is conditioned on (non-leaky augmentation).
    """
    x_t = denoiser.process.q_sample(x0, t, eps)
    if loss_type in BOUND_LOSSES:
        return vb_terms_bpd(denoiser, x0, x_t, t, raw=None if aug is None else denoiser.raw(x_t, t, y, aug), y=y)[0]
    if loss_type not in ("mse", "hybrid"):
        raise ValueError(f"unknown DDPM loss {loss_type!r}; choose mse, kl (= vlb) or hybrid")
    raw = denoiser.raw(x_t, t, y, aug).to(x0.dtype)
    learned = denoiser.variance.is_learned
    out, v = raw.chunk(2, dim=1) if learned else (raw, None)
    loss = mean_flat((mse_target(denoiser, x0, x_t, t, eps) - out) ** 2)
    if loss_type == "hybrid":
        if not learned:
            raise ValueError("the hybrid loss needs a learned variance (model.variance=learned_range or learned)")
        loss = loss + hybrid_weight * vb_terms_bpd(denoiser, x0, x_t, t, raw=torch.cat([out.detach(), v], 1))[0]
    return loss


def huber_c(cfg, dim: int) -> float:
    """The pseudo-Huber constant: fewstep.huber_c, or 0.00054 sqrt(dim) when it is 0 (Song & Dhariwal 2023)."""
    return cfg.fewstep.huber_c or 0.00054 * math.sqrt(dim)


def pseudo_huber(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||x - y||^2 + c^2) - c per image, the norm over the whole image (iCT; 2-rectified flow++)."""
    sq = (x.float() - y.float()).pow(2).flatten(1).sum(1)
    return (sq + c * c).sqrt() - c


def fm_loss(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None = None,
            aug: torch.Tensor | None = None, huber_c: float | None = None) -> torch.Tensor:
    """The conditional flow-matching loss (Lipman et al. 2022, Eq. 23; SD3 Eq. 2-3), per image: ||v_hat(x_t, t) -
    (eps - x0)||^2 averaged over pixels, x_t = (1 - t) x0 + t eps at (fractional) levels t. A velocity network is
    regressed directly; an eps or x0 network through its velocity eps_hat - x0_hat (the same loss in v-space).
    ``huber_c``: the pseudo-Huber distance sqrt(||v_hat - v||^2 + c^2) - c instead (2-rectified flow++, Lee et al.
    2024, Sec. 4.2, on the velocity; its LPIPS variant is left out)."""
    x_t = denoiser.process.q_sample(x0, t, eps)
    if denoiser.output is Output.VELOCITY and denoiser.precond == "none":
        v_hat = denoiser.raw(x_t, t, y, aug).to(x0.dtype)
    else:
        pred = denoiser(x_t, t, y=y, aug=aug)
        v_hat = (pred.eps - pred.x0).to(x0.dtype)
    if huber_c is not None:
        return pseudo_huber(v_hat, eps - x0, huber_c).to(x0.dtype)
    return mean_flat((v_hat - (eps - x0)) ** 2)


def dsm_loss(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
             anneal_power: float = 2.0, y: torch.Tensor | None = None, aug: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Annealed denoising score matching (NCSN Eq. 5-6), per image:
    1/2 || s_theta(x~, sigma) + z / sigma ||^2 summed over dimensions, times sigma^anneal_power."""
    x_t = denoiser.process.q_sample(x0, t, z)
    _, s = denoiser.process.alpha_s(t)
    s = expand_like(s, x0)
    score = -denoiser(x_t, t, y=y, aug=aug).eps / s
    return 0.5 * ((score + z / s) ** 2).flatten(1).sum(1) * s.flatten() ** anneal_power


def edm_loss(denoiser: Denoiser, x0: torch.Tensor, sigma: torch.Tensor, n: torch.Tensor, sigma_data: float = 0.5,
             y: torch.Tensor | None = None, aug: torch.Tensor | None = None) -> torch.Tensor:
    """EDM's loss (Eq. 2 and 8), per image: lambda(sigma) ||D(x0 + sigma n; sigma) - x0||^2, averaged over pixels
    (EDM sums; Adam does not see the constant). sigma: per-image noise levels (log-normal in training)."""
    s = expand_like(sigma, x0)
    D = denoiser.edm(x0 + s * n, sigma, y, aug).to(x0.dtype)
    return edm_weight(sigma, sigma_data).to(x0.device, x0.dtype) * mean_flat((D - x0) ** 2)


def likelihood_loss(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                    weight: torch.Tensor | None = None, y: torch.Tensor | None = None,
                    aug: torch.Tensor | None = None) -> torch.Tensor:
    """Denoising score matching with likelihood weighting lambda(t) = g(t)^2 (Song, Durkan, Murray & Ermon 2021,
    Eq. 7 and Thm. 1), per image in bits/dim: w ||eps - eps_hat(x_t, t)||^2 / (D ln 2) at fractional levels t,
    with w from :func:`scorekit.tsampling.continuous_levels`; its mean is the diffusion term
    int ||eps - eps_hat||^2 d log sigma of the bound (Kingma et al. 2021, Eq. 17). ``weight=None``: the
    uniform-t weight (N - 1) d log sigma / dt."""
    t = t.double()
    if weight is None:
        weight = (denoiser.process.num_levels - 1) * log_sigma_slope(denoiser.process, t)
    x_t = denoiser.process.q_sample(x0, t, eps)
    eps_hat = denoiser(x_t, t, y=y, aug=aug).eps.to(x0.dtype)
    return weight.to(x0.device, x0.dtype) * mean_flat((eps - eps_hat) ** 2) / math.log(2.0)
