"""Bits/dim of the likelihood recipes on the digits test split, side by side with the main job's L_simple model.

    python benchmarks/likelihood_recipes.py [--runs runs/likelihood] [--n 0] [--presets a,b,...]
                                            [--out benchmarks/results/likelihood_recipes.json]

Trains each preset into RUNS/<preset> (a finished run is reused, an interrupted one resumed), then measures
bits/dim on the test split (--n 0: all of it): DDPM's discrete variational bound (DDPM Eq. 5, the authors'
calc_bpd_loop) for the discrete-time recipes, the probability-flow ODE likelihood with uniform dequantization
for the continuous-time (likelihood-weighted) ones, and both for the main job's model so the two measures can
be compared on one model. Training seconds come from the runs' logged throughput (steps x batch / images/s),
which depends on what else ran beside them; the training cost against the main job is steps x the cost per
step, measured side by side (60 steps of each preset in turn, 3 rounds, the fastest of each)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PRESETS = ["ddpm-digits", "ddpm-digits-hybrid", "ddpm-digits-vlb", "vp-digits-likelihood",
           "subvp-digits-likelihood", "ve-digits-likelihood"]


def measure(run: Path, n: int) -> dict:
    from scorekit.evaluation.bpd import bits_per_dim
    from scorekit.run import RunDir, load
    from scorekit.studies.recipes import train_seconds

    d = load(run, device="cpu")
    cfg = RunDir(run).read_config()
    row = {"preset": cfg.name, "process": cfg.process.kind, "loss": cfg.training.loss,
           "t_sampling": cfg.training.t_sampling, "variance": cfg.model.variance, "steps": cfg.training.steps,
           "train_seconds": round(train_seconds(run, cfg.training.batch_size), 1)}
    methods = ["ode"] if cfg.training.loss == "likelihood" else ["vlb"]
    if cfg.name == "ddpm-digits":
        methods.append("ode")
    for m in methods:
        res = bits_per_dim(d, split="test", n=n, method=m)
        row[m] = {"bpd": res["bpd"], "sem": res["bpd_sem"], "n": res["n"]}
    return row


def step_costs(presets: list[str], steps: int = 60, rounds: int = 3) -> dict[str, float]:
    """Seconds per training step of each preset relative to the first, measured side by side: ``steps`` steps of
    each in turn, ``rounds`` times, the fastest round of each (wall times of whole runs depend on what else
    the machine is doing)."""
    import shutil
    import tempfile
    import time

    from scorekit.training import train_run

    best: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp())
    for _ in range(rounds):
        for preset in presets:
            t0 = time.perf_counter()
            train_run(preset, tmp / preset, [f"training.steps={steps}", "training.test_every=0",
                                             "training.checkpoint_every=100000"], device="cpu", progress=False,
                      evaluate=False)
            best[preset] = min(best.get(preset, float("inf")), time.perf_counter() - t0)
            shutil.rmtree(tmp / preset)
    return {p: round(best[p] / best[presets[0]], 3) for p in presets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/likelihood")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--n", type=int, default=0, help="test images (0: the whole split)")
    ap.add_argument("--out", default="benchmarks/results/likelihood_recipes.json")
    args = ap.parse_args()
    from scorekit.run import RunDir
    from scorekit.training import train_run

    rows = []
    for preset in args.presets.split(","):
        run = Path(args.runs) / preset
        latest = RunDir(run).latest() if (run / "config.yaml").exists() else None
        if latest is None or RunDir(run).read_config().training.steps > int(latest.stem.split("_")[-1]):
            train_run(preset, run, [], device="cpu", progress=False, evaluate=False)
        rows.append(measure(run, args.n))
        print(json.dumps(rows[-1]), flush=True)
    costs = step_costs([r["preset"] for r in rows])
    for r in rows:
        r["step_cost_vs_first"] = costs[r["preset"]]
        r["train_cost_vs_first"] = round(costs[r["preset"]] * r["steps"] / rows[0]["steps"], 2)
    base = rows[0]["vlb"]["bpd"] if rows and rows[0]["preset"] == "ddpm-digits" else None
    print("\n| preset | process | loss, t sampling | variance | steps | train s (logged) | training cost vs main job "
          "| bits/dim | measure | vs main job's bound |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        for m in ("vlb", "ode"):
            if m in r:
                rel = f"{r[m]['bpd'] / base - 1:+.1%}" if base else ""
                print(f"| {r['preset']} | {r['process']} | {r['loss']}, {r['t_sampling']} | {r['variance']} | "
                      f"{r['steps']} | {r['train_seconds']:.0f} | {r['train_cost_vs_first']:.2f}x | "
                      f"{r[m]['bpd']:.3f} +- {r[m]['sem']:.3f} | "
                      f"{'bound' if m == 'vlb' else 'ODE'} | {rel} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "likelihood_recipes", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
