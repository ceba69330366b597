"""Sampling throughput: network evaluations per second for the paper configurations, side by side with
diffusers' UNet2DModel, and scorekit's whole ancestral sampler (per-image noise included).

    python benchmarks/sample_throughput.py [--configs ...] [--batch 1024] [--steps 20] [--compile]

For each configuration: images x steps per second of the bare network (no grad, bf16 autocast and
channels-last on CUDA) for scorekit and diffusers, and of ``sample_ancestral`` over ``--steps`` levels;
from the latter, the projected time for 50,000 samples with the 1000-step sampler (DDPM's protocol).
Writes benchmarks/results/sample_throughput.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _models as bm  # noqa: E402
import torch  # noqa: E402
from _common import environment, write_json  # noqa: E402

from scorekit.model.denoiser import Denoiser  # noqa: E402
from scorekit.model.factory import build_process  # noqa: E402
from scorekit.rng import ImageRNG  # noqa: E402
from scorekit.samplers import sample_ancestral  # noqa: E402


def bare(net, cfg, device, batch, steps, bf16, channels_last, compile_):
    net, x = bm.prepared(net, cfg, device, batch, train=False, channels_last=channels_last)
    model = torch.compile(net, mode="reduce-overhead") if compile_ else net
    t = torch.full((batch,), 500, device=device)

    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            bm.call(model, x, t)

    seconds, memory = bm.seconds_per_step(step, device, steps, warmup=3 if compile_ else 1)
    net.cpu()
    return {"image_steps_per_s": batch / seconds, "peak_memory_gib": memory}


def sampler(net, cfg, device, batch, steps, bf16, channels_last):
    net, _ = bm.prepared(net, cfg, device, 1, train=False, channels_last=channels_last)
    d = Denoiser(net, build_process(cfg), output=cfg.model.output, variance=cfg.model.variance).to(device)
    shape = (batch, cfg.data.channels, cfg.data.resolution, cfg.data.resolution)

    def run(levels):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            sample_ancestral(d, shape, ImageRNG(0, batch, device), steps=levels)

    seconds, _ = bm.seconds_per_step(lambda: run(steps), device, 1, warmup=0)
    net.cpu()
    per = batch / (seconds / steps)
    return {"image_steps_per_s": per, "projected_50k_x_1000_steps_min": 50_000 * 1000 / per / 60}


def main() -> None:
    ap = bm.benchmark_parser(__doc__, "benchmarks/results/sample_throughput.json",
                             "default 1024 on CUDA (256 for 256x256), 4 on the CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile(mode='reduce-overhead'): CUDA graphs")
    args, device, cuda, peak, peak_src = bm.parse(ap)
    results = {}
    for preset in args.configs.split(","):
        ours, theirs, cfg = bm.build_pair(preset)
        flops = bm.forward_flops(ours, cfg)
        batch = args.batch or ((256 if cfg.data.resolution > 64 else 1024) if cuda else 4)
        steps = args.steps or (20 if cuda else 3)
        opts = dict(bf16=cuda, channels_last=cuda)
        row = {"description": bm.CONFIGS.get(preset, preset), "batch": batch, "forward_flops_per_image": flops}
        row["scorekit_network"] = bare(ours, cfg, device, batch, steps, compile_=args.compile and cuda, **opts)
        row["scorekit_network"]["peak_fraction"] = row["scorekit_network"]["image_steps_per_s"] * flops / peak
        if theirs is not None:
            row["diffusers_network"] = bare(theirs, cfg, device, batch, steps, compile_=args.compile and cuda, **opts)
            row["speedup_vs_diffusers"] = (row["scorekit_network"]["image_steps_per_s"]
                                           / row["diffusers_network"]["image_steps_per_s"])
        if cfg.family == "ddpm":
            sampler(ours, cfg, device, batch, 2, **opts)  # warm-up
            row["scorekit_ancestral_sampler"] = sampler(ours, cfg, device, batch, steps, **opts)
        results[preset] = row
        msg = f"{preset:18s} batch {batch}: network {row['scorekit_network']['image_steps_per_s']:.1f} image-steps/s"
        if theirs is not None:
            msg += f" (diffusers {row['diffusers_network']['image_steps_per_s']:.1f}, " \
                   f"ratio {row['speedup_vs_diffusers']:.2f}x)"
        if "scorekit_ancestral_sampler" in row:
            s = row["scorekit_ancestral_sampler"]
            msg += f"; sampler {s['image_steps_per_s']:.1f} image-steps/s -> 50k x 1000 steps in " \
                   f"{s['projected_50k_x_1000_steps_min']:.0f} min"
        print(msg, flush=True)
    write_json(args.out, {"benchmark": "sample_throughput", "environment": environment(device), "peak_flops": peak,
                          "peak_source": peak_src, "results": results,
                          "target": {"ddpm-cifar10_50k_samples_1000_steps_minutes": 30}})


if __name__ == "__main__":
    main()
