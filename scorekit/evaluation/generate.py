"""Samples from a denoiser: ``generate`` (uint8 images by seed, on the data's value set), and writing them."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..dist import Dist
from ..images import OutPaths, save_grid, save_npz, save_pngs, to_uint8
from ..model.denoiser import Denoiser
from ..model.fastpath import fast_sampling_denoiser
from ..model.guidance import conditional
from ..rng import ImageRNG
from ..samplers import accepted_options, resolve_schedule, sample, sampling_options
from .likelihood import data_values


@torch.no_grad()
def generate(denoiser: Denoiser, n: int, *, seed: int = 0, batch_size: int = 256, sampler: str | None = None,
             options: dict | None = None, progress: bool = False, dist: Dist | None = None,
             precision: str | None = None, compile: bool | None = None, labels: torch.Tensor | None = None,
             guidance: float = 1.0, classifier: Denoiser | None = None, classifier_scale: float = 0.0,
             guidance_interval: tuple[float, float] | None = None, raw: bool = False,
             record: dict | None = None) -> torch.Tensor:
    """n images as uint8 (N, C, H, W); image i depends only on (seed, i). The batches [kB, (k+1)B) are the
    same whatever the number of processes (under torchrun, rank r samples batches r, r + world, ...), so
    the images are bit-identical with 1 or many processes. ``precision`` / ``compile`` default to the
    run's sampling settings; a compiled network always sees full batches (the last one is padded with
    extra images that are discarded), so its shapes stay static. ``labels`` (one class per image) with
    ``guidance`` (only for sigma in ``guidance_interval``) / ``classifier`` and ``classifier_scale`` sample classes
    (see :mod:`scorekit.model.guidance`). A run that learnt its data's value set (``data.values``) gives images on
    that set (:func:`samples_u8`) unless ``raw``. ``record``, a dict, receives what was used: the sampler, the
    options it took (a searched schedule included) and whether the images are on the data's values."""
    cfg = denoiser.config
    name = sampler or cfg.sampling.sampler
    values = sample_values(denoiser, raw=raw)
    opts = resolve_schedule(denoiser, name, {**sampling_options(cfg.sampling), **(options or {})})
    if record is not None:
        record.update(sampler=name, options=accepted_options(name, opts), on_values=values is not None)
    compile = cfg.sampling.compile if compile is None else compile
    denoiser, bf16 = fast_sampling_denoiser(denoiser, precision=precision or cfg.sampling.precision,
                                            compile=compile)
    shape = denoiser.image_shape
    dist = dist or Dist(device=denoiser.device)
    starts = list(range(0, n, batch_size))
    mine = starts[dist.rank::dist.world]
    out = []
    for start in mine:
        idx = range(start, (start + batch_size) if compile else min(n, start + batch_size))
        d = denoiser
        if labels is not None:  # the padding of a compiled batch repeats the last label
            y = labels[torch.tensor([min(i, n - 1) for i in idx])]
            d = conditional(denoiser, y, guidance=guidance, classifier=classifier, classifier_scale=classifier_scale,
                            interval=guidance_interval)
        rng = ImageRNG(seed, idx, denoiser.device)
        with torch.autocast(denoiser.device.type, dtype=torch.bfloat16, enabled=bf16):
            x = sample(d, name, (len(idx), *shape), rng, progress=progress, **opts)
        out.append(to_uint8(x[:max(0, min(n - start, len(idx)))], denoiser.data_range, values))
    if not dist.enabled:
        return torch.cat(out) if out else torch.empty(0, *shape, dtype=torch.uint8)
    rounds = math.ceil(len(starts) / dist.world)  # every rank contributes `rounds` padded batches
    padded = torch.zeros(rounds, batch_size, *shape, dtype=torch.uint8)
    for k, images in enumerate(out):
        padded[k, :len(images)] = images
    gathered = dist.gather_cat(padded.to(dist.device)).cpu().reshape(dist.world, rounds, batch_size, *shape)
    batches = [gathered[k % dist.world, k // dist.world] for k in range(len(starts))]
    return torch.cat([b[:min(batch_size, n - s)] for b, s in zip(batches, starts)])


def sample_values(denoiser: Denoiser, *, raw: bool = False) -> torch.Tensor | None:
    """The values a run's samples are written on: the data's value set when the run learnt one, else (and with
    ``raw``) None, every 8-bit value."""
    return None if raw else data_values(denoiser)


def samples_u8(x: torch.Tensor, denoiser: Denoiser, *, raw: bool = False) -> torch.Tensor:
    """A sampler's output as the uint8 images a run writes: on :func:`sample_values` (the decoder's most likely
    value, as the bound and the codec assume: the digits' 17 grey levels), else rounded to 8 bits."""
    values = sample_values(denoiser, raw=raw)
    return to_uint8(x, denoiser.data_range, values)


def write_samples(out: str | Path | OutPaths, images: torch.Tensor, grid_max: int = 256) -> dict[str, str]:
    """The grid of the first ``grid_max`` images, one PNG per image and samples.npz (uint8 NHWC): in a
    folder (grid.png, images/, samples.npz), or at an :class:`~scorekit.images.OutPaths` (the grid at its
    main file, the rest as its companions)."""
    paths = out if isinstance(out, OutPaths) else OutPaths(Path(out), Path(out) / "grid.png")
    grid = save_grid(paths.main, images[:grid_max])
    save_pngs(paths.companion("images"), images)
    save_npz(paths.companion("samples.npz"), samples=images.permute(0, 2, 3, 1).numpy())
    return {"grid": str(grid), "images": str(paths.companion("images")), "npz": str(paths.companion("samples.npz"))}
