"""The autoguidance study's smaller guide: its training cost against the main run's, timed side by side. Each run's
config trains a short stretch in turn, three rounds, in one process, so both carry the same load; its time per step
is the median of its logged windows after the first, and the guide's cost is its steps x its time per step over the
main run's steps x the main run's time per step (the study's own column, from each run's logged throughput, is
distorted when the load changes between the two trainings).

    PYTHONPATH=. python benchmarks/guide_cost.py studies/autoguidance [--out benchmarks/results/guide_cost.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import environment, window_rates, write_json  # noqa: E402

from scorekit.config import load_config  # noqa: E402
from scorekit.training import train_run  # noqa: E402

STRETCH, WINDOW, ROUNDS = 150, 25, 3  # steps per measurement, steps per logged window, rounds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path, help="a finished `scorekit study autoguidance` folder")
    ap.add_argument("--out", default="benchmarks/results/guide_cost.json")
    args = ap.parse_args()
    configs = {arm: args.study / "runs" / arm / "config.yaml" for arm in ("main", "small")}
    for path in configs.values():
        if not path.is_file():
            print(f"{path}: missing; run `scorekit study autoguidance --out {args.study}` first", file=sys.stderr)
            return 2
    rates: dict[str, list[float]] = {arm: [] for arm in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            for arm, path in configs.items():
                out = Path(tmp) / f"{arm}{r}"
                train_run(path, out, [f"training.steps={STRETCH}", f"training.log_every={WINDOW}",
                                      "training.guide_at=0", f"training.checkpoint_every={STRETCH}"],
                          device="cpu", progress=False, evaluate=False)
                rates[arm] += window_rates(out)
    cfg = {arm: load_config(path) for arm, path in configs.items()}
    per_step = {arm: cfg[arm].training.batch_size / statistics.median(v) for arm, v in rates.items()}
    cost = (cfg["small"].training.steps * per_step["small"]) / (cfg["main"].training.steps * per_step["main"])
    payload = {"environment": environment(torch.device("cpu")), "study": str(args.study),
               "seconds_per_step": per_step, "steps": {arm: c.training.steps for arm, c in cfg.items()},
               "guide_cost": cost}
    print(f"{args.study}: the guide's training / the main run's = {cost:.3f} "
          f"(s/step {per_step['small']:.4f} x {cfg['small'].training.steps} over {per_step['main']:.4f} x "
          f"{cfg['main'].training.steps})")
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
