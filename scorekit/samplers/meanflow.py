"""MeanFlow sampling (Geng et al. 2025, Algorithm 2): jumps along the average velocity.

From z_1 ~ N(0, I) at path time 1, over times 1 = t_0 > t_1 > ... > t_K = 0 (uniform by default):
z_{t_{k+1}} = z_{t_k} - (t_k - t_{k+1}) u(z_{t_k}, t_{k+1}, t_k). One step is x0 = z_1 - u(z_1, 0, 1); K network
evaluations in all. The sample is z at time 0, the data (x_hat = x at sigma = 0, as every sampler returns).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.denoiser import Denoiser
from ..model.meanflow import average_velocity, is_mean_flow
from ..rng import ImageRNG
from .common import progress_bar


def meanflow_times(steps: int) -> torch.Tensor:
    """``steps`` + 1 path times uniform from 1 down to 0."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


@torch.no_grad()
def sample_meanflow(denoiser: Denoiser, shape: tuple[int, ...], rng: ImageRNG, *, steps: int | None = 1,
                    times: torch.Tensor | None = None, clip_denoised: bool = False, x_T: torch.Tensor | None = None,
                    callback: Callable[[dict], None] | None = None, progress: bool = False) -> torch.Tensor:
    """MeanFlow's sampler on a MeanFlow model with ``steps`` jumps (None: 1) over uniform times, or over ``times``
    (decreasing from 1 to 0); ``x_T``: the noise z_1; ``clip_denoised`` clips the final sample to the data range."""
    if shape[0] != len(rng):
        raise ValueError(f"batch size {shape[0]} does not match the {len(rng)} per-image generators")
    if not is_mean_flow(denoiser):
        raise ValueError("the meanflow sampler needs a MeanFlow model (model.mean_flow: true); a plain flow "
                         "samples with euler, heun or dpm2m")
    ts = meanflow_times(1 if steps is None else steps) if times is None else torch.as_tensor(times, dtype=torch.float64)
    if ts.ndim != 1 or len(ts) < 2 or float(ts[0]) != 1.0 or float(ts[-1]) != 0.0 or bool((ts[1:] >= ts[:-1]).any()):
        raise ValueError(f"MeanFlow's times must decrease from 1 to 0, got {ts.tolist()}")
    z = rng.randn(*shape[1:]).to(denoiser.device) if x_T is None else x_T.to(denoiser.device)
    for i in progress_bar(range(len(ts) - 1), progress, "meanflow"):
        t, r = float(ts[i]), float(ts[i + 1])
        z = z - (t - r) * average_velocity(denoiser, z, r, t).to(z.dtype)
        if callback is not None:
            callback({"i": i, "t": r, "x": z})
    return z.clamp(*denoiser.data_range) if clip_denoised else z
