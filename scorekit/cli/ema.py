"""`scorekit ema RUN --sigma-rel R --out RUN2` and `scorekit ema RUN --sweep`: post-hoc EMA (EDM2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import DEVICE_HELP, MAX_COUNT, Number, add_meter_args, device


def cmd_ema(args: argparse.Namespace) -> int:
    """Post-hoc EMA (Karras et al. 2024, EDM2): a run trained with training.snapshot_every > 0 keeps two
    power-function EMAs (training.phema_sigma_rel, 0.05 and 0.10 by default) and saves them every that many
    steps in RUN/checkpoints/phema. From those snapshots, the EMA of any other length is a least-squares
    combination, chosen after training:

      scorekit ema RUN --sigma-rel 0.08 --out RUN2   a run whose EMA is that reconstruction (sample, eval it)
      scorekit ema RUN --sweep                        FD against sigma_rel, written to RUN/ema_sweep/
                                                      (sweep.json, sweep.csv, sweep.png)

    sigma_rel is the EMA's standard deviation relative to the training time (EDM2 Eq. 2): 0.05 averages
    roughly the last 10% of training, 0.10 the last 20%."""
    import torch

    from ..ema.posthoc import SWEEP_GRID, plot_sweep, posthoc_run, snapshot_folder, sweep
    from ..errors import ScorekitError
    from ..images import atomic_write_bytes
    from ..studies.runner import write_csv

    if args.sweep == (args.sigma_rel is not None):
        raise ScorekitError("give --sigma-rel R --out RUN2 (one reconstruction) or --sweep (the FD curve)")
    snapshot_folder(args.run)  # no snapshots: say so before anything else
    if not args.sweep:
        if args.out is None:
            raise ScorekitError("--sigma-rel needs --out RUN2, the new run directory")
        out = posthoc_run(args.run, args.sigma_rel, args.out, args.step)
        print(f"post-hoc EMA sigma_rel {args.sigma_rel:g} -> {out} (see {out / 'posthoc_ema.json'}); "
              f"`scorekit sample {out}` samples it")
        return 0
    from ..evaluation.quality import FrechetMeter
    from ..run import config_of

    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    meter = FrechetMeter(config_of(args.run), extractor=args.extractor, device=dev,
                         weights=str(args.inception_weights) if args.inception_weights else None)
    grid = args.grid or list(SWEEP_GRID)
    rows = sweep(args.run, grid=grid, n=args.n, seeds=args.seeds, meter=meter, step=args.step, device=dev,
                 say=(lambda s: None) if args.no_progress else print)
    out = Path(args.out) if args.out else Path(args.run) / "ema_sweep"
    out.mkdir(parents=True, exist_ok=True)
    best = min(rows, key=lambda r: r["fd"])
    doc = {"metric": meter.describe(), "seeds": args.seeds, "rows": rows, "best": best}
    atomic_write_bytes(out / "sweep.json", (json.dumps(doc, indent=2) + "\n").encode())
    write_csv(out / "sweep.csv", [{k: v for k, v in r.items() if k != "fds"} for r in rows])
    plot_sweep(out / "sweep.png", rows, metric=meter.name)
    print(f"best sigma_rel {best['sigma_rel']:g}: {meter.name} {best['fd']:.2f}; wrote {out}/sweep.json, sweep.csv, "
          "sweep.png")
    return 0


def _sigma_rel_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 0.28), got {text!r}") from None
    if not values or not all(0 < v < 0.28 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 0.28), got {text!r}")
    return values


def _ema_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run trained with training.snapshot_every > 0")
    p.add_argument("--sigma-rel", type=Number(float, 0, 0.28, open_lo=True), metavar="R",
                   help="the EMA length to reconstruct (relative standard deviation, e.g. 0.08)")
    p.add_argument("--sweep", action="store_true", help="FD against sigma_rel over --grid")
    p.add_argument("--out", metavar="DIR", help="the new run (--sigma-rel) or the sweep's folder (RUN/ema_sweep)")
    p.add_argument("--step", type=Number(int, 1, 10**12), help="reconstruct at this training step (default: the "
                   "last snapshot); snapshots after it are not used")
    p.add_argument("--grid", type=_sigma_rel_list, metavar="R1,R2,...", help="the sweep's sigma_rel values "
                   "(default 0.01,0.02,0.03,0.04,0.05,0.075,0.1,0.13,0.16,0.2,0.25)")
    p.add_argument("--n", type=Number(int, 1, MAX_COUNT), default=2000, help="samples per point (2000)")
    p.add_argument("--seeds", type=Number(int, 1, 100), default=1, help="sample seeds per point (1)")
    add_meter_args(p)
    p.add_argument("--device", type=device, help=DEVICE_HELP)


COMMANDS = [("ema", "post-hoc EMA: reconstruct any EMA length from a run's snapshots, or sweep FD over it",
             _ema_args, cmd_ema)]
