"""Training throughput of the paper configurations, side by side with diffusers' UNet2DModel.

    python benchmarks/train_throughput.py [--configs ddpm-cifar10,ncsnv2-cifar10,ddpm-lsun-church]
        [--batch 128] [--steps 20] [--no-compile] [--peak-tflops 989]

A training step is forward + loss + backward + global-norm clipping + Adam + EMA, with scorekit's fast
path (bf16 autocast, channels-last, fused Adam and torch.compile on CUDA; fp32 on the CPU). The diffusers
network of the same configuration is timed in the same run under the same settings. Prints images/s,
peak memory, the ratio and the fraction of the device's peak FLOP rate (3x the forward FLOPs per image);
writes benchmarks/results/train_throughput.json. On the CPU the defaults are small (batch 2, 3 steps).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _models as bm  # noqa: E402
import torch  # noqa: E402
from _common import environment, write_json  # noqa: E402


def time_training(net, cfg, device, batch: int, steps: int, *, bf16: bool, channels_last: bool, compile_: bool):
    net, x = bm.prepared(net, cfg, device, batch, train=True, channels_last=channels_last)
    ema = copy.deepcopy(net).requires_grad_(False)
    params, ema_params = list(net.parameters()), list(ema.parameters())
    opt = torch.optim.Adam(params, lr=1e-4, **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    model = torch.compile(net) if compile_ else net
    eps = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = bm.call(model, x + eps, t)
        loss = (out.float() - eps).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        torch._foreach_lerp_(ema_params, params, 1e-4)

    seconds, memory = bm.seconds_per_step(step, device, steps, warmup=3 if compile_ else 1)
    net.cpu()
    return {"images_per_s": batch / seconds, "step_s": seconds, "peak_memory_gib": memory}


def main() -> None:
    ap = bm.benchmark_parser(__doc__, "benchmarks/results/train_throughput.json",
                             "per-config batch (default: the paper's on CUDA, 2 on the CPU)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile on CUDA")
    args, device, cuda, peak, peak_src = bm.parse(ap)
    fast = dict(bf16=cuda, channels_last=cuda, compile_=cuda and not args.no_compile)
    results = {}
    for preset in args.configs.split(","):
        ours, theirs, cfg = bm.build_pair(preset)
        flops = 3 * bm.forward_flops(ours, cfg)
        batch = args.batch or (cfg.training.batch_size if cuda else 2)
        steps = args.steps or (20 if cuda else 3)
        row = {"description": bm.CONFIGS.get(preset, preset), "batch": batch, "train_flops_per_image": flops,
               "settings": {k.rstrip("_"): v for k, v in fast.items()}}
        torch.manual_seed(0)
        for name, net in (("scorekit", ours), ("diffusers", theirs)):
            if net is not None:
                row[name] = time_training(net, cfg, device, batch, steps, **fast)
                row[name]["peak_fraction"] = row[name]["images_per_s"] * flops / peak
        line = f"{preset:18s} batch {batch:4d}: scorekit {row['scorekit']['images_per_s']:9.3g} img/s " \
               f"({100 * row['scorekit']['peak_fraction']:.1f}% of peak)"
        if theirs is not None:
            row["speedup_vs_diffusers"] = row["scorekit"]["images_per_s"] / row["diffusers"]["images_per_s"]
            line += (f", diffusers {row['diffusers']['images_per_s']:9.3g} img/s, "
                     f"ratio {row['speedup_vs_diffusers']:.2f}x")
        results[preset] = row
        mem = row["scorekit"]["peak_memory_gib"]
        print(line + (f", peak memory {mem:.1f} GiB" if mem is not None else ""), flush=True)
    write_json(args.out, {"benchmark": "train_throughput", "environment": environment(device),
                          "peak_flops": peak, "peak_source": peak_src, "results": results,
                          "target": {"ddpm-cifar10_images_per_s_on_one_h100": 5000}})


if __name__ == "__main__":
    main()
