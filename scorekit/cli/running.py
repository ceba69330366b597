"""`scorekit train`, `scorekit sample`, `scorekit bpd`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import ScorekitError


def cmd_train(args: argparse.Namespace) -> int:
    """Train a preset or YAML config. On a run directory that already has a checkpoint, training resumes
    exactly where it stopped (the run's config.yaml wins; overrides still apply). SIGINT / SIGTERM finish
    the current step, write a checkpoint and exit 0. Launch with torchrun for data-parallel training.

    examples:
      scorekit train ddpm-digits --out runs/digits
      scorekit train ddpm-cifar10 data.path=/data/cifar-10-batches-py --out runs/cifar10
      torchrun --nproc_per_node 8 -m scorekit train ddpm-cifar10 data.path=... --out runs/cifar10
    """
    from ..evaluate import describe
    from ..train import train_run

    t0 = time.perf_counter()
    result = train_run(args.config, args.out, args.overrides, device=args.device, progress=not args.no_progress,
                       evaluate=not args.no_eval)
    if result.summary:
        print(f"trained {result.run} to step {result.step} in {time.perf_counter() - t0:.0f} s")
        for line in describe(result.summary):
            print(line)
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="PRESET|CONFIG.yaml", help="preset name (see `scorekit presets`) or YAML file")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="configuration overrides, e.g. training.steps=1000 data.path=/data")
    p.add_argument("--out", metavar="RUN", help="run directory (default: runs/<preset name>)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-eval", action="store_true", help="skip the sampling and metrics after training")


def _load(args: argparse.Namespace, device=None):
    from ..run import load

    return load(args.run, ema=not args.no_ema, device=device or args.device or _default_device())


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample from a run with its EMA weights: writes grid.png, one PNG per image and samples.npz
    (uint8, NHWC). Image i depends only on (--seed, i), whatever --batch-size. On a digits run the
    proxy FD and IS are reported with the real-vs-real floor."""
    from ..evaluate import describe, generate, write_samples
    from ..metrics.proxy import proxy_metrics

    denoiser = _load(args)
    cfg = denoiser.config
    options = {"steps": args.steps} if args.steps else {}
    t0 = time.perf_counter()
    images = generate(denoiser, args.n, seed=args.seed, batch_size=args.batch_size, sampler=args.sampler,
                      options=options, progress=not args.no_progress, precision="bf16" if args.bf16 else None,
                      compile=args.compile or None)
    out = Path(args.out or Path(args.run) / "samples" / f"seed{args.seed}")
    summary = {"n": args.n, "seed": args.seed, "sampler": args.sampler or cfg.sampling.sampler,
               "steps": args.steps, "checkpoint_step": denoiser.checkpoint_step, "ema": denoiser.uses_ema,
               "seconds": round(time.perf_counter() - t0, 1), **write_samples(out, images)}
    if cfg.data.dataset == "digits" and cfg.data.resolution == 8 and cfg.data.channels == 1:
        summary["proxy"] = proxy_metrics(images)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.n} samples in {summary['seconds']} s -> {out}")
    for line in describe(summary):
        print(line)
    return 0


def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory (its latest checkpoint) or a checkpoint file")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sample_args(p: argparse.ArgumentParser) -> None:
    _common_run_args(p)
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--steps", type=int, default=0, help="sampler steps (default: the sampler's own)")
    p.add_argument("--sampler", help="ancestral, langevin, ddim, euler, heun, rk45, dpm2m, pc, euler_ancestral "
                   "(default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="base seed; image i uses (seed, i)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN/samples/seed<S>)")
    p.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA graphs on CUDA)")


def cmd_bpd(args: argparse.Namespace) -> int:
    """Bits/dim of a run on a data split, averaged over --n images. --method vlb (DDPM runs): the full
    variational bound, all T terms, the discretized decoder and the prior (the authors' calc_bpd_loop).
    --method ode (any run): the exact likelihood of the probability-flow ODE with uniform dequantization
    and the change of scale to 8-bit data made explicit; Hutchinson's trace estimator or the exact trace."""
    from ..dist import setup
    from ..evaluate import bits_per_dim

    dist = setup(args.device)
    denoiser = _load(args, dist.device)
    if args.method == "vlb" and denoiser.process.kind != "vp":
        raise ScorekitError("the variational bound is defined for DDPM (VP) runs; use --method ode")
    ode = {"trace": args.trace, "rtol": args.rtol, "atol": args.atol} if args.method == "ode" else {}
    res = bits_per_dim(denoiser, split=args.split, n=args.n, seed=args.seed, batch_size=args.batch_size,
                       method=args.method, progress=not args.no_progress, dist=dist, **ode)
    if not dist.main:
        return 0
    if args.json:
        print(json.dumps(res))
    elif args.method == "vlb":
        print(f"bits/dim (variational bound) on {res['n']} {res['split']} images: {res['bpd']:.4f} +- "
              f"{res['bpd_sem']:.4f} (prior {res['prior_bpd']:.2e}, decoder {res['decoder_bpd']:.4f})")
    else:
        print(f"bits/dim (probability-flow ODE, {args.trace} trace) on {res['n']} {res['split']} images: "
              f"{res['bpd']:.4f} +- {res['bpd_sem']:.4f}")
    return 0


def _bpd_args(p: argparse.ArgumentParser) -> None:
    _common_run_args(p)
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument("--n", type=int, default=0, help="number of images (default: the whole split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--method", default="vlb", choices=["vlb", "ode"], help="variational bound (DDPM) or ODE")
    p.add_argument("--trace", default="hutchinson", choices=["hutchinson", "exact"], help="ODE divergence")
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE solver tolerances (default 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--json", action="store_true")


COMMANDS = [
    ("train", "train a model (resumes an existing run)", _train_args, cmd_train),
    ("sample", "sample images from a run", _sample_args, cmd_sample),
    ("bpd", "bits/dim of a DDPM run on a data split", _bpd_args, cmd_bpd),
]
