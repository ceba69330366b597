"""The chain the codec walks: all T levels, K of them spread evenly, or a chain chosen for the run.

A respaced model (improved DDPM's respacing: keep alphabar at the chosen levels) is a model of its own, with its own
variational bound, and the codec's rate follows the bound of the chain it walks. Which levels to keep matters far
more than how many (Watson et al. 2021 pick them by dynamic programming over the bound's terms): a model trained
with L_simple predicts eps with an error that does not shrink with the noise, so at levels whose noise is well
below the data's quantisation step every level costs bits for nothing (on the digits' 17 grey levels the first 50
of DDPM's 1000 levels cost 2.3 of the full chain's 3.0 bits/dim). :func:`search_chain` keeps ``levels`` levels
spread evenly in t from a start level to T - 1 and picks the start whose bound is lowest on training images: the
decoder then codes x_0 from a latent whose noise is near the data's quantisation step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import ScorekitError

CHAIN_LEVELS = 25  # the chosen chain's length by default (25 network calls per chunk of images)
SEARCH_IMAGES = 128  # training images the start level is chosen on
SEARCH_STARTS = 14  # start levels tried: sigma on a geometric grid from sigma_min to SEARCH_SIGMA_MAX
SEARCH_SIGMA_MAX = 2.0
SEARCH_SEED = 0
CACHE = "codec_chain.json"


def coding_chain(denoiser, levels: int = 0, timesteps: list[int] | None = None):
    """The model on ``timesteps`` (increasing levels), else on ``levels`` of its T levels spread evenly (both ends
    kept); 0 or T: the whole chain. The codec walks it with one network call per level and chunk of images."""
    from ..samplers.common import respace
    from .fileformat import CodecError

    T = denoiser.process.num_levels
    if timesteps is not None:
        ts = [int(t) for t in timesteps]
        if not ts or any(not 0 <= t < T for t in ts) or any(b <= a for a, b in zip(ts, ts[1:])):
            raise CodecError(f"the chain's levels must increase within 0..{T - 1}; got {ts[:5]}...")
        return respace(denoiser, None, timesteps=ts)
    if not 0 <= levels <= T:
        raise CodecError(f"--levels {levels}: choose 1..{T} (the run's levels), or 0 for all")
    return respace(denoiser, levels or T, "uniform")


def chain_from(start: int, T: int, levels: int) -> list[int]:
    """``levels`` levels spread evenly from ``start`` to T - 1 (both kept; fewer if they would repeat)."""
    return sorted({round(v) for v in torch.linspace(start, T - 1, levels, dtype=torch.float64).tolist()})


def start_candidates(process, n: int = SEARCH_STARTS) -> list[int]:
    """Start levels whose sigma lies on a geometric grid from sigma_min to min(sigma_max, SEARCH_SIGMA_MAX) (level 0
    first)."""
    top = min(process.sigma_max, SEARCH_SIGMA_MAX)
    grid = torch.logspace(math.log10(process.sigma_min), math.log10(top), n, dtype=torch.float64)
    return sorted({int(round(float(process.t_of_sigma(s)))) for s in grid})


@torch.no_grad()
def search_chain(denoiser, images_u8: torch.Tensor, levels: int = CHAIN_LEVELS, *, seed: int = SEARCH_SEED,
                 progress=None) -> dict:
    """The chain of ``levels`` levels, evenly spread from a start level to T - 1, whose variational bound on
    ``images_u8`` is lowest (one draw of x_t per term and image, the same draws for every candidate). Returns
    ``timesteps``, ``bound_bpd`` and every candidate's ``(start, bound)``."""
    from ..data.pipeline import preprocess
    from ..evaluation.likelihood import pixel_max, vlb_bpd
    from ..rng import ImageRNG

    T = denoiser.process.num_levels
    if not 1 <= levels <= T:
        raise ScorekitError(f"--levels {levels}: choose 1..{T} (the run's levels)")
    x0 = preprocess(images_u8, denoiser.data_range, max_value=pixel_max(denoiser))
    tried = []
    starts = [s for s in start_candidates(denoiser.process) if s <= T - levels]  # room for all the levels
    for i, start in enumerate(starts):
        ts = chain_from(start, T, levels)
        d = coding_chain(denoiser, timesteps=ts)
        bound = float(vlb_bpd(d, x0, ImageRNG(seed, len(x0), denoiser.device))["total"].mean())
        tried.append((start, bound))
        if progress:
            progress(i + 1, len(starts))
    start, bound = min(tried, key=lambda sb: sb[1])
    return {"timesteps": chain_from(start, T, levels), "bound_bpd": bound, "levels": levels,
            "images": len(x0), "candidates": tried}


def chosen_chain(denoiser, run_dir: str | Path | None, levels: int = CHAIN_LEVELS, *, progress=None,
                 say=print) -> dict:
    """The run's chosen chain of ``levels`` levels: read from RUN/codec_chain.json when it was chosen for these
    weights, else searched on training images (:func:`search_chain`) and saved there (atomically; a read-only
    run folder is only told)."""
    from ..data.sources import build_source
    from ..errors import WriteError
    from ..images import atomic_write_bytes
    from .fileformat import weights_sha256

    weights = weights_sha256(denoiser)
    path = Path(run_dir) / CACHE if run_dir is not None and Path(run_dir).is_dir() else None
    cache = {}
    if path is not None and path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        if not isinstance(cache, dict) or cache.get("weights") != weights or not isinstance(cache.get("chains"), dict):
            cache = {}
    hit = cache.get("chains", {}).get(str(levels))
    if isinstance(hit, dict) and isinstance(hit.get("timesteps"), list):
        return hit
    source = build_source(denoiser.config.data, "train")
    n = min(SEARCH_IMAGES, len(source))
    idx = torch.linspace(0, len(source) - 1, n).round().long().tolist()
    images = torch.stack([source[i] for i in idx])
    say(f"choosing the run's coding chain of {levels} levels on {n} training images (once per run and checkpoint; "
        f"kept in {path if path else 'no file: not a run folder'})")
    found = search_chain(denoiser, images, levels, progress=progress)
    if path is not None:
        cache = {"weights": weights, "chains": {**cache.get("chains", {}), str(levels): found}}
        try:
            atomic_write_bytes(path, (json.dumps(cache, indent=1) + "\n").encode())
        except (OSError, WriteError) as e:
            say(f"could not keep the chain ({e}); it will be chosen again next time")
    return found
