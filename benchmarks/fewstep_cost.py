"""The few-step students' training cost against their teacher's, measured side by side: each objective trains a
short stretch (the teacher's own loss, then each distillation method from that teacher) in turn, twice, in one
process on an otherwise idle machine, and its time per step is the median of its logged windows after the first.
The cost of a whole student is then its steps x its time per step over the teacher's steps x the teacher's time per
step (the study's own logged times are kept too, but another job on the machine distorts them).

    PYTHONPATH=. python benchmarks/fewstep_cost.py --teacher RUN [--out benchmarks/results/fewstep_cost.json]
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
from scorekit.training.distill import STEPS_FRACTION, prepare  # noqa: E402

STRETCH, WINDOW = 60, 20  # steps per measurement, steps per logged window


def seconds_per_step(run: Path, batch: int) -> float:
    return batch / statistics.median(window_rates(run))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="a finished teacher run (the few-step study's runs/ddpm)")
    ap.add_argument("--methods", default="cd,ect,pd")
    ap.add_argument("--out", default="benchmarks/results/fewstep_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    teacher_cfg = load_config(str(Path(args.teacher) / "config.yaml"))
    methods = args.methods.split(",")
    log = [f"training.log_every={WINDOW}", "training.test_every=0", "training.checkpoint_every=100000",
           "training.snapshot_every=0"]
    times: dict[str, list[float]] = {m: [] for m in ["teacher", *methods]}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2):
            out = Path(tmp) / f"teacher{rep}"
            train_run(teacher_cfg.name, out, [f"training.steps={STRETCH}", *log, *_data(teacher_cfg)],
                      device="cpu", progress=False, evaluate=False)
            times["teacher"].append(seconds_per_step(out, teacher_cfg.training.batch_size))
            for m in methods:
                out = Path(tmp) / f"{m}{rep}"
                run = prepare(args.teacher, out, m, STRETCH, log)
                train_run(run.path, None, [], device="cpu", progress=False, evaluate=False)
                times[m].append(seconds_per_step(out, run.read_config().training.batch_size))
    per_step = {k: statistics.median(v) for k, v in times.items()}
    teacher_steps = teacher_cfg.training.steps
    rows = {}
    for m in methods:
        steps = max(1, round(STEPS_FRACTION[m] * teacher_steps))
        rows[m] = {"seconds_per_step": per_step[m], "steps": steps,
                   "time_vs_teacher": steps * per_step[m] / (teacher_steps * per_step["teacher"])}
        print(f"{m}: {per_step[m] * 1000:.0f} ms/step x {steps} steps = {rows[m]['time_vs_teacher']:.2f}x the "
              f"teacher's {teacher_steps} steps x {per_step['teacher'] * 1000:.0f} ms")
    write_json(args.out, {"environment": environment(torch.device("cpu")), "teacher": args.teacher,
                          "teacher_steps": teacher_steps, "seconds_per_step": per_step, "times": times,
                          "methods": rows})
    return 0


def _data(cfg) -> list[str]:
    return [] if cfg.data.dataset == "digits" else [f"data.path={cfg.data.path}"]


if __name__ == "__main__":
    sys.exit(main())
