"""The sampling fast path: channels-last, torch.compile with CUDA graphs, and bf16 autocast, applied where a
denoiser is made ready for sampling (``scorekit.evaluation.generate``, the benchmarks), not inside the samplers."""

from __future__ import annotations

import torch

from .denoiser import Denoiser


def fast_sampling_denoiser(denoiser: Denoiser, *, precision: str = "fp32", compile: bool = False
                           ) -> tuple[Denoiser, bool]:
    """The sampling fast path: channels-last and, if asked, torch.compile with CUDA graphs on CUDA; returns
    the denoiser to sample with and whether to run the network under bf16 autocast."""
    cuda = denoiser.device.type == "cuda"
    bf16 = precision == "bf16" or (precision == "auto" and cuda)
    if cuda:
        denoiser.net.to(memory_format=torch.channels_last)
    if compile:
        denoiser = denoiser.with_net(torch.compile(denoiser.net, mode="reduce-overhead" if cuda else "default"))
    return denoiser, bf16
