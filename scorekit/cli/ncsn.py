"""`scorekit plan-noise` (NCSNv2 techniques 1, 2, 4) and `scorekit toy langevin` (the NCSN toy)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..errors import ScorekitError
from ..images import atomic_write_bytes
from .args import SEED, Number, out_paths, real


def cmd_plan_noise(args: argparse.Namespace) -> int:
    """NCSNv2's techniques on a dataset in [0, 1]: sigma_1 = the largest distance between two training
    images (technique 1, exact, in blocks), the number of geometric levels L from the ratio gamma that
    makes Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = 0.5 (technique 2),
    and the step size eps minimising technique 4's expression for T steps per level.

    DATA is `digits`, a preset or YAML config (its data section), or a folder / zip / CIFAR-10 folder.
    --write saves the config of DATA with the planned process and sampling values.
    """
    from ..config import ConfigError, load_config
    from ..data.resolve import data_config, load_images
    from ..processes.techniques import plan_noise

    data_config(args.data, resolution=args.resolution, channels=args.channels)
    cfg = None
    if args.write:
        try:
            cfg = load_config(args.data) if not Path(args.data).is_dir() and args.data != "digits" else None
        except ConfigError:
            cfg = None
        if cfg is None:
            raise ScorekitError(f"--write {args.write}: needs DATA to be a preset or YAML config to update, "
                                f"got {args.data!r}")
        if Path(args.write).suffix not in (".yaml", ".yml"):
            raise ScorekitError(f"--write {args.write}: expected a .yaml file")
    images, described = load_images(args.data, resolution=args.resolution, channels=args.channels,
                                    max_images=args.max_images)
    plan = plan_noise(images.double() / 255.0, sigma_end=args.sigma_end, n_steps_each=args.steps_per_level)
    if args.json:
        print(json.dumps({"images": len(images), **plan.as_dict()}, indent=2))
    else:
        print(f"data: {described}, D = {plan.dim}")
        print(f"technique 1: sigma_1 = largest pairwise distance = {plan.sigma_begin:.4f}")
        print(f"technique 2: gamma = {plan.gamma:.5f} (expression {plan.technique2:.3f}, target 0.5): "
              f"L = {plan.num_levels} levels from {plan.sigma_begin:.4g} to {plan.sigma_end:g}")
        print(f"technique 4: T = {plan.n_steps_each} steps per level: step_lr = {plan.step_lr:.3g} "
              f"(expression {plan.technique4:.4f}, target 1)")
    if cfg is not None:
        cfg.process.sigma_begin = round(plan.sigma_begin, 4)
        cfg.process.sigma_end = plan.sigma_end
        cfg.process.num_levels = plan.num_levels
        cfg.sampling.n_steps_each = plan.n_steps_each
        cfg.sampling.step_lr = float(f"{plan.step_lr:.3g}")
        atomic_write_bytes(args.write, cfg.to_yaml().encode())
        print(f"wrote {args.write}")
    return 0


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="digits, a preset or YAML config, or a folder / zip / CIFAR folder")
    p.add_argument("--steps-per-level", type=Number(int, 1, 10_000), default=5,
                   help="Langevin steps T per level (default 5)")
    p.add_argument("--sigma-end", type=real(0, 1e4, open_lo=True), default=0.01,
                   help="the smallest sigma (default 0.01)")
    p.add_argument("--resolution", type=Number(int, 1, 4096), help="resize images to this size (folders and zips)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 or 3 (folders and zips; default 3)")
    p.add_argument("--max-images", type=Number(int, 0, 10_000_000, zero_means="all"), default=0,
                   help="use the first N images only (default 0: all)")
    p.add_argument("--write", metavar="OUT.yaml", help="write DATA's config with the planned values")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")


def cmd_toy(args: argparse.Namespace) -> int:
    """The NCSN paper's toy (Sec. 3.2): samples of 1/5 N((-5,-5), I) + 4/5 N((5,5), I) from Langevin
    dynamics with the exact score (which gets the weights wrong) and from annealed Langevin dynamics with
    the same number of steps (which recovers them), as in the paper: no final denoising step, so each mode
    of the annealed samples has the spread of the data noised at sigma_L = 1 (std sqrt(2)). --denoise adds
    a panel with NCSNv2's final denoising step applied (std 1/sqrt(2)). Writes a PNG and a JSON with the
    recovered weights and spreads; --out DIR receives toy_langevin.png, --out FILE.png is the figure."""
    from ..toy import langevin_toy

    out = out_paths(args.out, "toy", "toy_langevin.png")
    res = langevin_toy(args.n, seed=args.seed, steps=args.steps, denoise=args.denoise)
    png = _scatter(out.main, res)
    print(f"weight of the (-5,-5) mode: true 0.200, Langevin {res['plain_weight']:.3f}, "
          f"annealed Langevin {res['annealed_weight']:.3f} ({args.n} samples, {args.steps} steps each)")
    print(f"spread of the annealed samples around their mode: std {res['annealed_std']:.3f} (exact samples 1, "
          f"data noised at sigma_L = {res['sigma_L']:g}: {(1 + res['sigma_L'] ** 2) ** 0.5:.3f})"
          + (f"; after the final denoising step {res['denoised_std']:.3f}" if args.denoise else ""))
    print(f"figure: {png}")
    stats = {k: v for k, v in res.items() if "weight" in k or k.endswith("_std") or k == "sigma_L"}
    atomic_write_bytes(out.companion("toy_langevin.json"), (json.dumps(stats, indent=2) + "\n").encode())
    return 0


def _scatter(path: Path, res: dict) -> Path:
    from ..evaluation.plots import figure
    from ..toy import two_gaussians

    exact, _ = two_gaussians().sample(len(res["plain"]), torch.Generator().manual_seed(0))
    panels = [(exact, "exact samples of the data (std 1)"),
              (res["plain"], f"Langevin, exact score (weight {res['plain_weight']:.2f})"),
              (res["annealed"],
               f"annealed Langevin (weight {res['annealed_weight']:.2f}, std {res['annealed_std']:.2f})")]
    if "denoised" in res:
        panels.append((res["denoised"], f"+ final denoising step (std {res['denoised_std']:.2f})"))
    with figure(path, ncols=len(panels), size=(4 * len(panels), 4.3)) as axes:
        for ax, (pts, title) in zip(axes, panels):
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
            ax.set(xlim=(-9, 9), ylim=(-9, 9), aspect="equal", xlabel="x1", ylabel="x2")
            ax.set_title(title, fontsize=9)
    return path


def _toy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", choices=["langevin"], help="which toy experiment")
    p.add_argument("--n", type=Number(int, 1, 1_000_000), default=2000, help="number of samples")
    p.add_argument("--steps", type=Number(int, 10, 1_000_000), default=1000,
                   help="Langevin steps (annealed: split over 10 levels)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    p.add_argument("--denoise", action="store_true", help="also show NCSNv2's final denoising step applied")
    p.add_argument("--out", default="toy", metavar="DIR|FILE.png", help="output folder (default ./toy) or figure")


COMMANDS = [
    ("plan-noise", "choose sigma_1, L and the step size from the data (NCSNv2)", _plan_args, cmd_plan_noise),
    ("toy", "the NCSN paper's two-Gaussian Langevin experiment", _toy_args, cmd_toy),
]
