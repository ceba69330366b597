"""Bits/dim of the likelihood recipes on the digits test split, side by side with the main job's L_simple model.

    python benchmarks/likelihood_recipes.py [--runs runs/likelihood] [--n 0] [--presets a,b,...]
                                            [--out benchmarks/results/likelihood_recipes.json]

Trains each preset into RUNS/<preset> (a finished run is reused, an interrupted one resumed), then measures
bits/dim on the test split (--n 0: all of it): DDPM's discrete variational bound (DDPM Eq. 5, the authors'
calc_bpd_loop) for the discrete-time recipes, the probability-flow ODE likelihood with uniform dequantization
for the continuous-time (likelihood-weighted) ones, and both for the main job's model so the two measures can
be compared on one model. Training seconds are the runs' own (train_seconds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PRESETS = ["ddpm-digits", "ddpm-digits-hybrid", "ddpm-digits-vlb", "vp-digits-likelihood",
           "subvp-digits-likelihood", "ve-digits-likelihood"]


def measure(run: Path, n: int) -> dict:
    from scorekit.evaluate import bits_per_dim
    from scorekit.run import RunDir, load

    d = load(run, device="cpu")
    cfg = RunDir(run).read_config()
    row = {"preset": cfg.name, "process": cfg.process.kind, "loss": cfg.training.loss,
           "t_sampling": cfg.training.t_sampling, "variance": cfg.model.variance, "steps": cfg.training.steps,
           "train_seconds": float((run / "train_seconds").read_text()) if (run / "train_seconds").exists() else None}
    methods = ["ode"] if cfg.training.loss == "likelihood" else ["vlb"]
    if cfg.name == "ddpm-digits":
        methods.append("ode")
    for m in methods:
        res = bits_per_dim(d, split="test", n=n, method=m)
        row[m] = {"bpd": res["bpd"], "sem": res["bpd_sem"], "n": res["n"]}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/likelihood")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--n", type=int, default=0, help="test images (0: the whole split)")
    ap.add_argument("--out", default="benchmarks/results/likelihood_recipes.json")
    args = ap.parse_args()
    from scorekit.run import RunDir
    from scorekit.train import train_run

    rows = []
    for preset in args.presets.split(","):
        run = Path(args.runs) / preset
        latest = RunDir(run).latest() if (run / "config.yaml").exists() else None
        if latest is None or RunDir(run).read_config().training.steps > int(latest.stem.split("_")[-1]):
            train_run(preset, run, [], device="cpu", progress=False, evaluate=False)
        rows.append(measure(run, args.n))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["vlb"]["bpd"] if rows and rows[0]["preset"] == "ddpm-digits" else None
    print("\n| preset | process | loss, t sampling | variance | steps | train s | bits/dim | measure | vs main job |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        for m in ("vlb", "ode"):
            if m in r:
                rel = f"{r[m]['bpd'] / base - 1:+.1%}" if base else ""
                print(f"| {r['preset']} | {r['process']} | {r['loss']}, {r['t_sampling']} | {r['variance']} | "
                      f"{r['steps']} | {r['train_seconds']:.0f} | {r[m]['bpd']:.3f} +- {r[m]['sem']:.3f} | "
                      f"{'bound' if m == 'vlb' else 'ODE'} | {rel} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "likelihood_recipes", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
