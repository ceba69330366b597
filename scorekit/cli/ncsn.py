"""`scorekit plan-noise` (NCSNv2 techniques 1, 2, 4) and `scorekit toy langevin` (the NCSN toy)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ScorekitError


def cmd_plan_noise(args: argparse.Namespace) -> int:
    """NCSNv2's techniques on a dataset in [0, 1]: sigma_1 = the largest distance between two training
    images (technique 1, exact, in blocks), the number of geometric levels L from the ratio gamma that
    makes Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = 0.5 (technique 2),
    and the step size eps minimising technique 4's expression for T steps per level.

    DATA is `digits`, a preset or YAML config (its data section), or a folder / zip / CIFAR-10 folder.
    --write saves the config of DATA with the planned process and sampling values.
    """
    from ..config import ConfigError, load_config
    from ..data.resolve import load_images
    from ..techniques import plan_noise

    images, described = load_images(args.data, resolution=args.resolution, channels=args.channels,
                                    max_images=args.max_images)
    try:
        cfg = load_config(args.data) if not Path(args.data).is_dir() and args.data != "digits" else None
    except ConfigError:
        cfg = None
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
    if args.write:
        if cfg is None:
            raise ScorekitError("--write needs DATA to be a preset or YAML config to update")
        cfg.process.sigma_begin = round(plan.sigma_begin, 4)
        cfg.process.sigma_end = plan.sigma_end
        cfg.process.num_levels = plan.num_levels
        cfg.sampling.n_steps_each = plan.n_steps_each
        cfg.sampling.step_lr = float(f"{plan.step_lr:.3g}")
        Path(args.write).write_text(cfg.to_yaml())
        print(f"wrote {args.write}")
    return 0


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="digits, a preset or YAML config, or a folder / zip / CIFAR folder")
    p.add_argument("--steps-per-level", type=int, default=5, help="Langevin steps T per level (default 5)")
    p.add_argument("--sigma-end", type=float, default=0.01, help="the smallest sigma (default 0.01)")
    p.add_argument("--resolution", type=int, help="resize images to this size (folders and zips)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 or 3 (folders and zips; default 3)")
    p.add_argument("--max-images", type=int, default=0, help="use the first N images only (default all)")
    p.add_argument("--write", metavar="OUT.yaml", help="write DATA's config with the planned values")
    p.add_argument("--json", action="store_true")


def cmd_toy(args: argparse.Namespace) -> int:
    """The NCSN paper's toy (Sec. 3.2): samples of 1/5 N((-5,-5), I) + 4/5 N((5,5), I) from Langevin
    dynamics with the exact score (which gets the weights wrong) and from annealed Langevin dynamics with
    the same number of steps (which recovers them). Writes a PNG and prints the recovered weights."""
    from ..toy import langevin_toy

    res = langevin_toy(args.n, seed=args.seed, steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = _scatter(out / "toy_langevin.png", res)
    print(f"weight of the (-5,-5) mode: true 0.200, Langevin {res['plain_weight']:.3f}, "
          f"annealed Langevin {res['annealed_weight']:.3f} ({args.n} samples, {args.steps} steps each)")
    print(f"figure: {png}")
    (out / "toy_langevin.json").write_text(json.dumps({k: v for k, v in res.items() if "weight" in k}, indent=2))
    return 0


def _scatter(path: Path, res: dict) -> Path:
    from ..plots import figure

    with figure(path, ncols=3, size=(12, 4)) as axes:
        from ..toy import two_gaussians

        exact, _ = two_gaussians().sample(len(res["plain"]), None)
        for ax, pts, title in zip(axes, [exact, res["plain"], res["annealed"]],
                                  ["exact samples", f"Langevin (weight {res['plain_weight']:.2f})",
                                   f"annealed Langevin (weight {res['annealed_weight']:.2f})"]):
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
            ax.set(xlim=(-9, 9), ylim=(-9, 9), title=title, aspect="equal")
    return path


def _toy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", choices=["langevin"], help="which toy experiment")
    p.add_argument("--n", type=int, default=2000, help="number of samples")
    p.add_argument("--steps", type=int, default=1000, help="Langevin steps (annealed: split over 10 levels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="toy", help="output folder (default ./toy)")


COMMANDS = [
    ("plan-noise", "choose sigma_1, L and the step size from the data (NCSNv2)", _plan_args, cmd_plan_noise),
    ("toy", "the NCSN paper's two-Gaussian Langevin experiment", _toy_args, cmd_toy),
]
