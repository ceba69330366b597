"""DDPM's ancestral sampler (Ho et al. 2020, Algorithm 2), for any discrete process.

For the VE ladder of NCSN the same posterior step is the score-SDE paper's ancestral sampler for SMLD,
and its last step (t = 0, sigma_{-1} = 0) is NCSN's final denoising step x + sigma_L^2 s(x).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.denoiser import Denoiser, Variance
from ..rng import ImageRNG
from .common import prior_x, progress_bar, respace


@torch.no_grad()
def sample_ancestral(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = None,
                     schedule: str = "uniform", timesteps: list[int] | None = None,
                     variance: Variance | str | None = None, clip_denoised: bool = True,
                     x_T: torch.Tensor | None = None, start: int | None = None,
                     callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """x_T ~ the prior (VP: N(0, I); VE: N(0, sigma_max^2 I)); for t = T..1:
    x_{t-1} = mu_theta(x_t, t) + sigma_t z (z = 0 at the last step).

    ``steps`` < T runs on a subsequence of the levels (improved DDPM's respacing) chosen by ``schedule``
    (uniform, quad, karras, logsnr) or given as ``timesteps``;
    ``variance`` overrides the model's (fixedlarge / fixedsmall); ``clip_denoised`` clips the
    predicted x0 to the data range before taking the posterior mean (the authors' default);
    ``callback`` receives {i, t, x, x0} after every step (progressive generation). ``start`` begins the
    chain at that level with ``x_T`` as x_start (decoding a latent, as in the paper's interpolations).
    """
    if shape[0] != len(rng):
        raise ValueError(f"batch size {shape[0]} does not match the {len(rng)} per-image generators")
    denoiser = respace(denoiser, steps, schedule, timesteps)
    process = denoiser.process
    device = denoiser.device
    first = process.num_levels - 1 if start is None else start
    x = prior_x(denoiser, shape, rng, first) if x_T is None else x_T.to(device)
    if not 0 <= first < process.num_levels:
        raise ValueError(f"start level {first} outside 0..{process.num_levels - 1}")
    levels = list(range(first, -1, -1))
    for i, t in enumerate(progress_bar(levels, progress, "ancestral")):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        mean, log_var, x0 = denoiser.p_mean_variance(x, tt, clip=clip_denoised, variance=variance)
        x = mean + torch.exp(0.5 * log_var) * rng.randn_like(x) if t > 0 else mean
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x
