"""Samplers: plain functions ``sample_x(denoiser, shape, rng, *, steps, callback, progress, ...)``."""

from .ancestral import sample_ancestral

SAMPLERS = {"ancestral": sample_ancestral}

__all__ = ["sample_ancestral", "SAMPLERS"]
