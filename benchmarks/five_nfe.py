"""Issue 39's five-evaluation target on one DDPM run: the paper's 1000-step ancestral chain against UniPC, iPNDM and
DPM-Solver++(2M) SDE at 5 network evaluations, each on the default log-SNR steps and on the schedule
`scorekit tune-schedule RUN --sampler S --steps 5 --seed 100` searches for the run (256 samples of seed 100, disjoint
from the measured seeds); every judge of the digits, SEEDS sample seeds x N, ratios to the chain with their 95%
intervals and the verdict against the target. The run's eval/ folder keeps each seed's measurement, so a rerun
resumes; the search writes RUN/schedules.json.

    PYTHONPATH=. python benchmarks/five_nfe.py RUN [--criterion all] [--out benchmarks/results/five_nfe.json]

--criterion all: the searches rank schedules on every judge (tune-schedule --criterion all) instead of the proxy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import environment, write_json  # noqa: E402

from scorekit.metrics.intervals import fmt_interval, ratio_interval, verdict  # noqa: E402
from scorekit.run import load  # noqa: E402
from scorekit.studies.runner import Context, seeded_fd  # noqa: E402

SEEDS, N, TARGET, SEARCH_SEED = 5, 2000, 1.25, 100
SOLVERS = ("unipc", "ipndm", "dpm2m_sde")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished ddpm-digits run")
    ap.add_argument("--criterion", choices=("first", "all"), default="first", help="tune-schedule's --criterion")
    ap.add_argument("--out", default="benchmarks/results/five_nfe.json")
    args = ap.parse_args()
    ctx = Context(folder=args.run.parent, base="ddpm-digits", overrides=[], steps=0, n=N, seed=0)
    d = load(args.run)
    meter = ctx.meter(d.config)
    res = {"ancestral 1000": seeded_fd(ctx, "fivenfe", d, meter, args.run, "ancestral", {"steps": 1000}, SEEDS)}
    for s in SOLVERS:
        res[f"{s} logsnr"] = seeded_fd(ctx, "fivenfe", d, meter, args.run, s, {"steps": 5, "schedule": "logsnr"},
                                       SEEDS)
    for s in SOLVERS:
        subprocess.run([sys.executable, "-m", "scorekit", "tune-schedule", str(args.run), "--sampler", s,
                        "--steps", "5", "--seed", str(SEARCH_SEED), "--criterion", args.criterion, "--no-progress"],
                       check=True)
        d = load(args.run)  # with the searched schedule
        tag = "fivenfe_tuned" if args.criterion == "first" else f"fivenfe_tuned_{args.criterion}"
        res[f"{s} searched"] = seeded_fd(ctx, tag, d, meter, args.run, s, {"steps": 5, "schedule": "auto"}, SEEDS)
    ref = res["ancestral 1000"]
    for key, r in res.items():
        parts = []
        for name, j in r["judges"].items():
            if key != "ancestral 1000":
                q, lo, hi = ratio_interval(j["values"], ref["judges"][name]["values"])
                j.update(ratio=q, ratio_low=lo, ratio_high=hi, verdict=verdict(lo, hi, TARGET))
                parts.append(f"{name} {j['fd']:.2f} [{j['low']:.2f}, {j['high']:.2f}] -> "
                             f"{fmt_interval(q, lo, hi)} ({j['verdict']})")
            else:
                parts.append(f"{name} {j['fd']:.2f} [{j['low']:.2f}, {j['high']:.2f}]")
        print(f"{key}: " + "; ".join(parts))
    write_json(args.out, {"environment": environment(torch.device("cpu")), "run": str(args.run), "seeds": SEEDS,
                          "n": N, "target": TARGET, "search_seed": SEARCH_SEED, "criterion": args.criterion,
                          "results": res,
                          "schedules": (args.run / "schedules.json").read_text()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
