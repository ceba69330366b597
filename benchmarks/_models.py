"""The paper configurations the throughput benchmarks measure, built as scorekit networks and, where one
exists, as diffusers' UNet2DModel with the same configuration."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from scorekit.config import load_config
from scorekit.interop.diffusers_config import unet2d_kwargs, uniform_norm_groups
from scorekit.model.factory import build_net

CONFIGS = {"ddpm-cifar10": "DDPM CIFAR-10 U-Net (35.7M)", "ncsnv2-cifar10": "NCSNv2 CIFAR-10 (29.7M)",
           "ddpm-lsun-church": "DDPM 256x256 U-Net (114M)"}


def build_pair(preset: str, overrides: list[str] | tuple[str, ...] = ()):
    """(scorekit net, diffusers net or None, config); diffusers has no RefineNet, so NCSNv2 gets None, and none
    when the U-Net's layers use different GroupNorm group counts (which UNet2DModel cannot express)."""
    cfg = load_config(preset, list(overrides))
    ours = build_net(cfg)
    theirs = None
    m, d = cfg.model, cfg.data
    groups = uniform_norm_groups(m.ch, m.ch_mult, m.norm_groups)
    if cfg.model.arch == "unet" and groups is not None:
        try:
            from diffusers import UNet2DModel
        except ImportError:
            UNet2DModel = None
        if UNet2DModel is not None:
            theirs = UNet2DModel(**unet2d_kwargs(resolution=d.resolution, in_ch=d.channels, out_ch=d.channels, ch=m.ch,
                                                 ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                                                 attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                                                 norm_groups=groups))
            assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    return ours, theirs, cfg


def call(net, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = net(x, t)
    return out.sample if hasattr(out, "sample") else out


def forward_flops(net, cfg) -> float:
    """FLOPs of one forward pass of one image (matmuls and convolutions, torch's flop counter)."""
    d = cfg.data
    x = torch.randn(1, d.channels, d.resolution, d.resolution)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        call(net, x, torch.tensor([10.0]))
    return float(fc.get_total_flops())


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float, str]:
    """The device's peak FLOP/s: given, a datasheet value for known GPUs (bf16 dense), or measured (CPU)."""
    if override_tflops:
        return override_tflops * 1e12, "given"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in (("H200", 989.0), ("H100", 989.0), ("A100", 312.0)):
            if key in name:
                return tflops * 1e12, f"{key} bf16 dense datasheet"
        return float("nan"), "unknown GPU"
    import time

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(4):
        a @ b
    return 4 * 2 * 2048**3 / (time.perf_counter() - t0), "measured fp32 matmul"


def peak_memory(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def prepared(net, cfg, device: torch.device, batch: int, *, train: bool, channels_last: bool):
    """The network on ``device`` in train or eval mode (channels-last if asked) and an input batch (x, t)."""
    net = net.to(device).train(train)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    d = cfg.data
    x = torch.randn(batch, d.channels, d.resolution, d.resolution, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return net, x


def seconds_per_step(step, device: torch.device, steps: int, warmup: int = 1) -> tuple[float, float | None]:
    """Run ``step`` ``warmup`` times (compilation happens there), then time ``steps`` calls: seconds per call
    and the peak memory of the timed calls (GiB, CUDA only)."""
    import time

    from _common import sync

    for _ in range(warmup):
        step()
    sync(device)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps, peak_memory(device)


def benchmark_parser(doc: str, out: str, batch_help: str):
    """The options every throughput benchmark takes."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, help=batch_help)
    ap.add_argument("--steps", type=int, help="timed steps (default 20 on CUDA, 3 on the CPU)")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s for the utilisation figure")
    ap.add_argument("--out", default=out)
    return ap


def parse(ap):
    """Parse the options; return (args, device, on CUDA?, peak FLOP/s, where the peak comes from)."""
    args = ap.parse_args()
    device = torch.device(args.device)
    peak, source = peak_flops(device, args.peak_tflops)
    return args, device, device.type == "cuda", peak, source
