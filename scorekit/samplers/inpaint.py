"""Inpainting with the reverse chain: the known pixels (mask = 1) are replaced, at every level, by the
reference image noised to that level, so the unknown pixels are sampled in harmony with them.

* Replacement (Song et al. 2021, App. I.2 "imputation"; the DDPM-side method): at each reverse step the
  unknown pixels come from p(x_{t-1} | x_t) and the known ones from q(x_{t-1} | x0) = N(a x0, s^2 I).
* RePaint's resampling (Lugmayr et al. 2022, Algorithm 1): after every ``jump_length`` reverse steps the
  chain goes ``jump_length`` steps back up with the forward process q(x_{t+1} | x_t), ``jumps`` times (the
  paper's r = jumps + 1), which lets the unknown pixels absorb the known ones.

NCSN's annealed-Langevin inpainting (the authors' sampler) is
:func:`scorekit.samplers.langevin.sample_langevin_inpaint`. Both work on any process.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..model.denoiser import Denoiser
from ..rng import ImageRNG
from .common import prior_x, progress_bar, respace


def repaint_schedule(num_levels: int, *, jump_length: int = 10, jumps: int = 0) -> list[int]:
    """The levels the chain visits, from num_levels - 1 down to -1 (the data). With ``jumps`` > 0, at every
    ``jump_length``-th level on the way down it climbs ``jump_length`` levels back up, ``jumps`` times."""
    if jump_length < 1 or jumps < 0:
        raise ValueError(f"need jump_length >= 1 and jumps >= 0, got {jump_length} and {jumps}")
    left = {t: jumps for t in range(0, num_levels - jump_length, jump_length)}
    t, seq = num_levels - 1, [num_levels - 1]
    while t >= 0:
        t -= 1
        seq.append(t)
        if left.get(t, 0) > 0:
            left[t] -= 1
            for _ in range(jump_length):
                t += 1
                seq.append(t)
    return seq


def _a_s(process, t: int) -> tuple[float, float]:
    return (1.0, 0.0) if t < 0 else (float(process.a[t]), float(process.s[t]))


@torch.no_grad()
def sample_inpaint(denoiser: Denoiser, reference: torch.Tensor, mask: torch.Tensor, rng: ImageRNG, *,
                   steps: int | None = None, jumps: int = 0, jump_length: int = 10, clip_denoised: bool = True,
                   progress: bool = False) -> torch.Tensor:
    """Inpaint ``reference`` (B, ...) where ``mask`` (broadcastable, 1 = known) is 0, by replacement on the
    reverse chain (``steps`` respaces it) with RePaint's resampling when ``jumps`` > 0. The known pixels of
    the result are the reference's exactly."""
    if reference.shape[0] != len(rng):
        raise ValueError(f"batch size {reference.shape[0]} does not match the {len(rng)} per-image generators")
    denoiser = respace(denoiser, steps)
    process = denoiser.process
    device = denoiser.device
    x0 = reference.to(device)
    mask = mask.to(device, x0.dtype).expand_as(x0)
    seq = repaint_schedule(process.num_levels, jump_length=jump_length, jumps=jumps)
    x = prior_x(denoiser, tuple(x0.shape), rng, seq[0])
    for t, nxt in progress_bar(list(zip(seq[:-1], seq[1:])), progress, "inpaint"):
        if nxt < t:  # reverse step t -> t - 1, then the known pixels from q(x_{t-1} | x0)
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=device)
            mean, log_var, _ = denoiser.p_mean_variance(x, tt, clip=clip_denoised)
            unknown = mean + torch.exp(0.5 * log_var) * rng.randn_like(x) if t > 0 else mean
            a, s = _a_s(process, nxt)
            known = a * x0 + s * rng.randn_like(x) if s > 0 else x0
            x = mask * known + (1 - mask) * unknown
        else:  # forward step t -> t + 1 of q (RePaint's jump back)
            a0, s0 = _a_s(process, t)
            a1, s1 = _a_s(process, nxt)
            scale = a1 / a0
            x = scale * x + math.sqrt(max(s1 * s1 - (scale * s0) ** 2, 0.0)) * rng.randn_like(x)
    return mask * x0 + (1 - mask) * x


MASKS = ("half", "box", "random")


def inpaint_mask(kind: str, shape: tuple[int, int, int], *, seed: int = 0) -> torch.Tensor:
    """A (1, 1, H, W) float mask, 1 = known pixel: ``half`` keeps the left half (the NCSN authors' choice),
    ``box`` hides the centre square of side H/2, ``random`` hides each pixel with probability 1/2 (seeded);
    anything else is a path to an image whose light pixels (>= 128) are kept, resized to H x W."""
    _, h, w = shape
    mask = torch.ones(1, 1, h, w)
    if kind == "half":
        mask[..., w // 2:] = 0
    elif kind == "box":
        top, left = h // 4, w // 4
        mask[..., top:top + max(1, h // 2), left:left + max(1, w // 2)] = 0
    elif kind == "random":
        g = torch.Generator().manual_seed(seed)
        mask = (torch.rand(1, 1, h, w, generator=g) >= 0.5).float()
    else:
        from ..data.sources import decode

        mask = (decode(Path(kind), kind, h, 1).float() >= 128).float()[None]
    if mask.all() or not mask.any():
        from ..errors import ScorekitError

        raise ScorekitError(f"--mask {kind}: the mask must keep some pixels and hide some, at {h}x{w}")
    return mask
