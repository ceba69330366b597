"""Helpers shared by the samplers: progress bars and respacing of discrete levels."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from ..denoiser import Denoiser


def progress_bar(items: Iterable, enabled: bool, desc: str) -> Iterable:
    return tqdm(items, desc=desc, leave=False, dynamic_ncols=True) if enabled else items


def even_timesteps(num_levels: int, steps: int) -> torch.Tensor:
    """``steps`` increasing levels spread evenly over 0..num_levels-1, always including both ends."""
    if not 1 <= steps <= num_levels:
        raise ValueError(f"steps must be in 1..{num_levels}, got {steps}")
    if steps == 1:
        return torch.tensor([num_levels - 1])
    return torch.linspace(0, num_levels - 1, steps, dtype=torch.float64).round().long().unique()


def respace(denoiser: Denoiser, steps: int | None) -> Denoiser:
    """The denoiser on ``steps`` evenly spaced levels (itself when ``steps`` is None or all levels)."""
    if steps is None or steps == denoiser.process.num_levels:
        return denoiser
    return denoiser.respaced(even_timesteps(denoiser.process.num_levels, steps))
