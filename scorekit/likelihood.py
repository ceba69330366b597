"""Likelihood in bits/dim: DDPM's variational bound (the authors' ``calc_bpd_loop``)."""

from __future__ import annotations

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
