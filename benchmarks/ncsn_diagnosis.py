"""Why NCSNv2 on the digits converges more slowly than DDPM: one factor at a time.

    python benchmarks/ncsn_diagnosis.py --out runs/diagnosis [--variants a,b,...] [--n 1000] [--final-n 2000]

Each variant is a preset with overrides, trained into OUT/<name> (resumed if present) and measured by the
digits proxy FD (against the 300 test digits) at each checkpoint with EDM's Heun sampler (18 steps, 35
NFE: the same sampler for every variant, so the learned model is compared, not the sampler), and at the
last checkpoint also with the variant's own sampler. ``--langevin`` additionally sweeps the Langevin step
size of the default model against technique 4's choice, and ``--errors`` measures each model's
denoising error per noise level on the test digits (in [0, 1] units, both families alike). Writes
OUT/diagnosis.json; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import environment, write_json  # noqa: E402

from scorekit.data import digits  # noqa: E402
from scorekit.images import from_uint8, to_uint8  # noqa: E402
from scorekit.metrics.proxy import proxy_metrics  # noqa: E402
from scorekit.rng import ImageRNG  # noqa: E402
from scorekit.run import RunDir, load  # noqa: E402
from scorekit.samplers import sample, sampling_options  # noqa: E402

UNET = ["model.arch=unet", "model.ch=16", "model.ch_mult=[1,2,4]", "model.num_res_blocks=1",
        "model.attn_resolutions=[4]", "model.dropout=0.0"]
DDPM_RECIPE = ["training.lr=0.002", "training.warmup=100", "training.grad_clip=1.0"]
# the ncsnv2-digits default as diagnosed (sigma_L = 0.01, L = 22); the preset now has sigma_L = 0.05, L = 16
OLD = ["process.sigma_end=0.01", "process.num_levels=22", "sampling.step_lr=0.0000156"]
VARIANTS = {  # name: (preset, overrides, what it tests)
    "ddpm": ("ddpm-digits", [], "the DDPM default (reference)"),
    "ncsnv2": ("ncsnv2-digits", [*OLD], "the NCSNv2 default"),
    "ncsnv2-ddpm-recipe": ("ncsnv2-digits", [*OLD, *DDPM_RECIPE], "DDPM's optimiser: lr 2e-3, warmup 100, clip 1"),
    "ncsnv2-lr3e-4": ("ncsnv2-digits", [*OLD, "training.lr=0.0003"], "a smaller learning rate"),
    "ncsnv2-ema0.99": ("ncsnv2-digits", [*OLD, "training.ema_decay=0.99"], "a shorter EMA"),
    # (L and step_lr from techniques 2 and 4 for the new sigma_L; half the levels: technique 4's step for that ratio)
    "ncsnv2-sigmaL-0.05": ("ncsnv2-digits", [*OLD, "process.sigma_end=0.05", "process.num_levels=16",
                                             "sampling.step_lr=0.000396"],
                           "sigma_L near the quantisation step 1/16 (the new ncsnv2-digits default)"),
    "ncsnv2-L-11": ("ncsnv2-digits", [*OLD, "process.num_levels=11", "sampling.step_lr=0.0000204"], "half the levels"),
    "ncsnv2-power1": ("ncsnv2-digits", [*OLD, "training.anneal_power=1.0"], "loss weight sigma instead of sigma^2"),
    "unet-on-ve": ("ncsnv2-digits", [*OLD, *UNET, "model.output=sigma_score", *DDPM_RECIPE],
                   "the DDPM digits U-Net as the NCSN score model"),
    "ncsnv2-on-vp": ("ddpm-digits", ["model.arch=ncsnv2", "model.ngf=16", "model.output=eps"],
                     "the NCSNv2 RefineNet as the DDPM eps-model"),
    "ddpm-g4": ("ddpm-digits", ["model.norm_groups=4"], "the DDPM default with 4 GroupNorm groups everywhere"),
    "unet-on-ve-g4": ("ncsnv2-digits", [*OLD, *UNET, "model.norm_groups=4", "model.output=sigma_score", *DDPM_RECIPE],
                      "the U-Net with 4 GroupNorm groups as the NCSN score model"),
    "ncsnv2-unet-digits": ("ncsnv2-unet-digits", [], "the new preset: the U-Net, sigma_L = 0.05, L = 16"),
}
HEUN = ("heun", {"steps": 18})


@torch.no_grad()
def fd(d, sampler: str, options: dict, n: int, seed: int = 0) -> dict:
    opts = {**sampling_options(d.config.sampling), **options}
    t0 = time.perf_counter()
    x = torch.cat([sample(d, sampler, (len(ix), *d.image_shape), ImageRNG(seed, ix), **opts)
                   for ix in (range(s, min(n, s + 500)) for s in range(0, n, 500))])
    m = proxy_metrics(to_uint8(x, d.data_range))  # both judges: proxy_fd and hog_fd
    return {"sampler": sampler, "options": {k: v for k, v in options.items()}, "n": n, "proxy_fd": m["proxy_fd"],
            "floor": m["proxy_fd_floor"], "seconds": round(time.perf_counter() - t0, 1)}


@torch.no_grad()
def denoising_error(d, sigmas01: list[float], seed: int = 0) -> dict[str, float]:
    """Mean squared error of E[x0 | x0 + sigma eps] on the 300 test digits, in [0, 1] units at sigma (in [0, 1]
    units), for either family (a model on [-1, 1] sees sigma doubled and its error is halved)."""
    x01 = digits("test").images.float() / 255.0
    width = d.data_range[1] - d.data_range[0]
    x = from_uint8(digits("test").images, d.data_range)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for s in sigmas01:
        eps = torch.randn(x.shape, generator=g)
        den = d.denoise(x + s * width * eps, s * width)
        out[f"{s:g}"] = float(((den - d.data_range[0]) / width - x01).pow(2).mean())
    return out


def train(out: Path, preset: str, overrides: list[str]) -> float:
    from scorekit.training import train_run

    if RunDir(out).latest() is not None and (out / "train_seconds").is_file():
        return float((out / "train_seconds").read_text())
    t0 = time.perf_counter()
    train_run(preset, out, [*overrides, "training.checkpoint_every=500", "training.keep_checkpoints=20",
                            "eval.proxy_samples=0", "eval.bpd_images=0"], device="cpu", progress=False, evaluate=False)
    seconds = time.perf_counter() - t0
    (out / "train_seconds").write_text(f"{seconds:.1f}\n")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/diagnosis")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, help="override training.steps of every variant")
    ap.add_argument("--n", type=int, default=1000, help="samples per checkpoint measurement")
    ap.add_argument("--final-n", type=int, default=2000, help="samples at the last checkpoint, own sampler")
    ap.add_argument("--langevin", action="store_true", help="sweep the default model's Langevin step size")
    ap.add_argument("--errors", action="store_true", help="denoising error per noise level")
    args = ap.parse_args()
    root = Path(args.out)
    path = root / "diagnosis.json"
    results = json.loads(path.read_text())["variants"] if path.is_file() else {}
    for name in args.variants.split(","):
        preset, overrides, what = VARIANTS[name]
        overrides = overrides + ([f"training.steps={args.steps}"] if args.steps else [])
        key = f"{name}@{args.steps or 'default'}"
        if key in results and "own" in results[key]:
            continue
        seconds = train(root / key.replace("@", "_"), preset, overrides)
        run = RunDir(root / key.replace("@", "_"))
        curve = []
        for step, ckpt in run.checkpoints():
            d = load(ckpt)
            curve.append({"step": step, **fd(d, *HEUN, args.n)})
            print(f"{key} step {step}: heun-35 FD {curve[-1]['proxy_fd']:.2f}", flush=True)
        d = load(run.path)
        own = fd(d, d.config.sampling.sampler, {}, args.final_n)
        row = {"what": what, "preset": preset, "overrides": overrides, "train_seconds": seconds,
               "parameters": sum(p.numel() for p in d.net.parameters()), "curve": curve, "own": own}
        if args.errors:
            row["denoising_mse"] = denoising_error(d, [0.01, 0.03, 0.0625, 0.1, 0.3, 1.0])
        results[key] = row
        print(f"{key}: {what}; trained in {seconds:.0f} s; own sampler FD {own['proxy_fd']:.2f} "
              f"({own['n']} samples, floor {own['floor']:.2f})", flush=True)
        write_json(path, {"benchmark": "ncsn_diagnosis", "environment": environment(torch.device("cpu")),
                          "variants": results})
    if args.langevin:
        from scorekit.processes.techniques import step_size_for

        d = load(root / "ncsnv2_default")
        p = d.process
        gamma = (p.sigma_max / p.sigma_min) ** (1 / (p.num_levels - 1))
        sweep = []
        for t, mults in ((10, (0.25, 0.5, 1.0, 2.0, 4.0)), (5, (1.0,)), (20, (1.0,))):
            eps4 = step_size_for(t, gamma, p.sigma_min)
            for mult in mults:
                sweep.append({"n_steps_each": t, "step_lr": eps4 * mult, "technique4_multiple": mult,
                              **fd(d, "langevin", {"n_steps_each": t, "step_lr": eps4 * mult}, args.n)})
                print(f"langevin T={t} eps={eps4 * mult:.3g} (x{mult}): FD {sweep[-1]['proxy_fd']:.2f}", flush=True)
        payload = json.loads(path.read_text())
        payload["langevin_sweep"] = sweep
        write_json(path, payload)
    table(results)


def table(results: dict) -> None:
    print("\n| variant | what | parameters | train s | heun-35 FD by step | own sampler FD (n) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, r in results.items():
        curve = ", ".join(f"{c['step']}: {c['proxy_fd']:.1f}" for c in r["curve"])
        print(f"| {key} | {r['what']} | {r['parameters']:,} | {r['train_seconds']:.0f} | {curve} | "
              f"{r['own']['proxy_fd']:.2f} ({r['own']['n']}) |")
    if any("denoising_mse" in r for r in results.values()):
        print("\ndenoising MSE ([0, 1] units) by sigma:")
        for key, r in results.items():
            if "denoising_mse" in r:
                print(key, {k: f"{v:.2e}" for k, v in r["denoising_mse"].items()})


if __name__ == "__main__":
    main()
