"""Training time per step of digits presets measured side by side: each preset trains a short stretch in turn,
three times, in one process on an otherwise idle machine; its time per step is the median over its logged windows
after the first (a study's own logged times carry whatever else ran on the machine). The flows study's time target
(fm-digits in at most 1.1x edm-digits' time, at the same number of steps) is the ratio of these.

    PYTHONPATH=. python benchmarks/preset_cost.py [--presets edm-digits,fm-digits,ddpm-digits]
        [--out benchmarks/results/preset_cost.json]
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

STRETCH, WINDOW, REPEATS = 60, 20, 3  # steps per measurement, steps per logged window, turns


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="edm-digits,fm-digits,ddpm-digits")
    ap.add_argument("--out", default="benchmarks/results/preset_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    presets = args.presets.split(",")
    log = [f"training.steps={STRETCH}", f"training.log_every={WINDOW}", "training.test_every=0",
           "training.checkpoint_every=100000", "training.snapshot_every=0"]
    times: dict[str, list[float]] = {p: [] for p in presets}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(REPEATS):
            for p in presets:
                out = Path(tmp) / f"{p}{rep}"
                train_run(p, out, log, device="cpu", progress=False, evaluate=False)
                batch = load_config(p).training.batch_size
                times[p].append(batch / statistics.median(window_rates(out)))
    per_step = {p: statistics.median(v) for p, v in times.items()}
    first = presets[0]
    for p in presets:
        print(f"{p}: {per_step[p] * 1000:.0f} ms/step ({', '.join(f'{t * 1000:.0f}' for t in times[p])}), "
              f"{per_step[p] / per_step[first]:.2f}x {first}'s")
    write_json(args.out, {"environment": environment(torch.device("cpu")), "stretch": STRETCH, "window": WINDOW,
                          "seconds_per_step": per_step, "times": times,
                          "ratio_to_first": {p: per_step[p] / per_step[first] for p in presets}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
