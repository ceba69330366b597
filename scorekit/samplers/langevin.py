"""Annealed Langevin dynamics (NCSN Algorithm 1) with NCSNv2's final denoising step, and the authors'
inpainting and interpolation variants.

The dynamics run in sigma-space, x_hat = x_t / a_t, where every process looks like NCSN's
x0 + sigma * eps and the score is -eps / sigma; for VE models x_hat is x itself and each step is
exactly the authors': x <- x + alpha_i s(x, sigma_i) + sqrt(2 alpha_i) z, alpha_i = eps sigma_i^2 / sigma_L^2.
Levels run from the largest sigma (the authors' i = 0, scorekit's t = N - 1) down to the smallest.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..model.denoiser import Denoiser
from ..processes.base import expand_like
from ..rng import ImageRNG
from .common import progress_bar


def _score_hat(denoiser: Denoiser, x_hat: torch.Tensor, t: int) -> torch.Tensor:
    """Score of p_sigma_t at x_hat in sigma-space, -eps / sigma_t, from the discrete view at level t."""
    tt = torch.full((x_hat.shape[0],), t, dtype=torch.long, device=x_hat.device)
    a, _ = denoiser.process.alpha_s(tt)
    sigma = denoiser.process.sigmas[t].item()
    return -denoiser(expand_like(a, x_hat) * x_hat, tt).eps / sigma


def uniform_init(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG) -> torch.Tensor:
    """x ~ Uniform over the data range (NCSN's initialisation, configs' data_init: false)."""
    lo, hi = denoiser.data_range
    return (lo + (hi - lo) * rng.rand(*shape[1:])).to(denoiser.device)


@torch.no_grad()
def sample_langevin(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, n_steps_each: int = 5,
                    step_lr: float = 6.2e-6, denoise: bool = True, x_init: torch.Tensor | None = None,
                    callback: Callable[[dict], None] | None = None, progress: bool = False,
                    steps: int | None = None) -> torch.Tensor:
    """Annealed Langevin dynamics: for each level from sigma_1 to sigma_L, ``n_steps_each`` steps of size
    alpha_i = step_lr * sigma_i^2 / sigma_L^2; then, with ``denoise``, x <- x + sigma_L^2 s(x, sigma_L).
    ``steps`` (if given) is the total number of Langevin steps, spread evenly over the levels.
    ``callback`` receives {level, t, sigma, x} after each level (and "denoised" after the last step)."""
    if shape[0] != len(rng):
        raise ValueError(f"batch size {shape[0]} does not match the {len(rng)} per-image generators")
    process = denoiser.process
    N = process.num_levels
    if steps:
        n_steps_each = max(1, round(steps / N))
    sigma_L = process.sigma_min
    x = uniform_init(denoiser, shape, rng) if x_init is None else x_init.to(denoiser.device)
    for level, t in enumerate(progress_bar(range(N - 1, -1, -1), progress, "langevin")):
        sigma = process.sigmas[t].item()
        alpha = step_lr * (sigma / sigma_L) ** 2
        for _ in range(n_steps_each):
            z = rng.randn_like(x)
            x = x + alpha * _score_hat(denoiser, x, t) + math.sqrt(2 * alpha) * z
        if callback is not None:
            callback({"level": level, "t": t, "sigma": sigma, "x": x})
    if denoise:
        x = x + sigma_L**2 * _score_hat(denoiser, x, 0)
        if callback is not None:
            callback({"level": N, "t": 0, "sigma": 0.0, "x": x, "denoised": True})
    return x


@torch.no_grad()
def sample_langevin_inpaint(denoiser: Denoiser, reference: torch.Tensor, mask: torch.Tensor, rng: ImageRNG, *,
                            n_steps_each: int = 5, step_lr: float = 6.2e-6, denoise: bool = True,
                            progress: bool = False) -> torch.Tensor:
    """Inpainting (authors' anneal_Langevin_dynamics_inpainting): before every step the known pixels
    (``mask`` = 1) are replaced by the reference noised to the current level, reference + sigma_i z."""
    process = denoiser.process
    reference, mask = reference.to(denoiser.device), mask.to(denoiser.device, reference.dtype)
    x = uniform_init(denoiser, tuple(reference.shape), rng)
    sigma_L = process.sigma_min
    for t in progress_bar(range(process.num_levels - 1, -1, -1), progress, "inpaint"):
        sigma = process.sigmas[t].item()
        alpha = step_lr * (sigma / sigma_L) ** 2
        for _ in range(n_steps_each):
            known = reference + sigma * rng.randn_like(x)
            x = mask * known + (1 - mask) * x
            x = x + alpha * _score_hat(denoiser, x, t) + math.sqrt(2 * alpha) * rng.randn_like(x)
    if denoise:
        x = x + sigma_L**2 * _score_hat(denoiser, x, 0)
    return mask * reference + (1 - mask) * x


@torch.no_grad()
def sample_langevin_interpolation(denoiser: Denoiser, rows: int, n_interpolations: int, rng: ImageRNG, *,
                                  n_steps_each: int = 5, step_lr: float = 6.2e-6, denoise: bool = True,
                                  progress: bool = False) -> torch.Tensor:
    """Interpolation (authors' anneal_Langevin_dynamics_interpolation): each row starts from one
    initialisation and its images share two noise draws p, q mixed as p cos(theta) + q sin(theta),
    theta from 0 to pi/2. ``rng`` holds one generator per row. Returns (rows * n_interpolations, C, H, W)."""
    if rows != len(rng):
        raise ValueError(f"{rows} rows need {rows} per-row generators, got {len(rng)}")
    process = denoiser.process
    shape = denoiser.image_shape
    x = uniform_init(denoiser, (rows, *shape), rng).repeat_interleave(n_interpolations, dim=0)
    angles = torch.linspace(0, math.pi / 2, n_interpolations, device=x.device)
    cos = angles.cos().repeat(rows).reshape(-1, 1, 1, 1)
    sin = angles.sin().repeat(rows).reshape(-1, 1, 1, 1)
    sigma_L = process.sigma_min
    for t in progress_bar(range(process.num_levels - 1, -1, -1), progress, "interpolate"):
        sigma = process.sigmas[t].item()
        alpha = step_lr * (sigma / sigma_L) ** 2
        for _ in range(n_steps_each):
            p = rng.randn(*shape).to(x.device).repeat_interleave(n_interpolations, dim=0)
            q = rng.randn(*shape).to(x.device).repeat_interleave(n_interpolations, dim=0)
            x = x + alpha * _score_hat(denoiser, x, t) + math.sqrt(2 * alpha) * (p * cos + q * sin)
    if denoise:
        x = x + sigma_L**2 * _score_hat(denoiser, x, 0)
    return x


@torch.no_grad()
def sample_pc(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = None,
              schedule: str = "uniform", timesteps: list[int] | None = None, snr: float = 0.16,
              n_corrector: int = 1, norms: str = "batch", denoise: bool = True,
              callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithms 2-3) on the model's levels: at each level
    ``n_corrector`` Langevin corrector steps of size eps = 2 alpha_t (snr ||z|| / ||s||)^2, then the
    reverse-diffusion predictor x <- reverse_scale x + step_var * s + sqrt(step_var) z (VE:
    sigma_t^2 - sigma_{t-1}^2; VP: beta_t). ``denoise`` returns the last predictor mean; ``steps`` respaces
    the levels.

    ``norms="batch"`` averages ||z|| and ||s|| over the batch, as the authors' code does; a sample then
    depends on its batch through those two numbers. ``norms="image"`` uses each image's own norms (the
    algorithm as the paper writes it, independent of the batch), which is unstable in very few
    dimensions, where ||s|| can be near 0.
    """
    from .common import prior_x, respace

    if shape[0] != len(rng):
        raise ValueError(f"batch size {shape[0]} does not match the {len(rng)} per-image generators")
    if norms not in ("batch", "image"):
        raise ValueError(f"norms must be batch or image, got {norms!r}")
    denoiser = respace(denoiser, steps, schedule, timesteps)
    process = denoiser.process
    x = prior_x(denoiser, shape, rng, process.num_levels - 1)
    x_mean = x
    B = shape[0]
    for i, t in enumerate(progress_bar(range(process.num_levels - 1, -1, -1), progress, "pc")):
        tt = torch.full((B,), t, dtype=torch.long, device=x.device)
        for _ in range(n_corrector):
            grad = denoiser.score(x, tt)
            z = rng.randn_like(x)
            zn, gn = z.flatten(1).norm(dim=1), grad.flatten(1).norm(dim=1)
            if norms == "batch":
                zn, gn = zn.mean().expand_as(zn), gn.mean().expand_as(gn)
            ratio = zn / gn.clamp_min(1e-30)
            step = expand_like(2 * float(process.corrector_alpha[t]) * (snr * ratio) ** 2, x)
            x = x + step * grad + (2 * step).sqrt() * z
        var = float(process.step_variance[t])
        x_mean = float(process.reverse_scale[t]) * x + var * denoiser.score(x, tt)
        x = x_mean + math.sqrt(var) * rng.randn_like(x)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x_mean": x_mean})
    return x_mean if denoise else x
