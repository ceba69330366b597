"""`scorekit study NAME --out DIR`: the papers' experiments as one command each."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..studies import STUDIES
from .args import DEVICE_HELP, SEED, Number, add_meter_args, device

STUDY_NAMES = list(STUDIES)


def cmd_study(args: argparse.Namespace) -> int:
    """Run one of the papers' experiments into DIR: ordinary run directories under DIR/runs plus report.md,
    PNG figures, a CSV and a JSON with the protocol. Running the same command again resumes the study:
    finished runs are skipped, interrupted ones continue, measurements already made are reused.

      ncsn-techniques   NCSN, NCSN_{1,2,4}, NCSN_{1,2,4,5}, NCSNv2: FD against the step, with and without
                        the final denoising step (the NCSNv2 rebuttal's ablation)
      ema               FD against the step with the EMA and the raw weights of one run
      memorization      training vs test loss, nearest training images of samples, the KDE baseline
      ddpm-objectives   DDPM's Table 2: eps / mean prediction x L_simple / the true bound (fixed or learned
                        variance), FD and bits/dim per row
      guidance          FD against class agreement for classifier-free guidance (a class-conditional
                        preset) and classifier guidance (the same data unconditionally, plus a classifier)
      recipes           the base recipe, EDM's loss, EDM + augmentation (also on 300 images), the NCSNv2
                        network with EDM's loss, and post-hoc EMA: FD against NFE, FD against sigma_rel
      few-step          consistency tuning / distillation and progressive distillation from a DDPM and an
                        NCSN teacher at 1, 2 and 4 network evaluations, consistency training from scratch, and
                        the training cost of each relative to its teacher's (2,000 samples x 5 seeds)
      flows             flow matching (uniform and logit-normal t) beside DDPM's and EDM's recipes on the same
                        network: FD (5 seeds x 2,000), training time, the ODE's bits/dim
      autoguidance      an unconditional run autoguided by each cheap guide (its kept early EMA, its raw
                        weights, a smaller network) against the weight, with and without the guidance
                        interval; FD against NFE (3-20) for every sampler (3 seeds x 2,000, both judges)

    Defaults finish on 2 CPU cores on the digits in about 30 minutes per study; the papers' scale is
    --base ncsnv2-cifar10 data.path=/data/cifar-10-batches-py (Inception FID: --inception-weights).
    """
    from ..config import load_config
    from ..studies.runner import Context

    module = STUDIES[args.name]
    base = args.base or module.DEFAULT_BASE
    steps = args.steps or module.DEFAULT_STEPS
    from ..errors import ScorekitError

    module.check(load_config(base, args.overrides))  # a bad base or override fails before anything is written
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ScorekitError(f"--out {out}: exists and is not a folder")
    if args.checkpoints > steps:
        raise ScorekitError(f"--checkpoints {args.checkpoints}: more than the {steps} training steps")
    import torch

    n = args.n or getattr(module, "DEFAULT_N", 500)
    ctx = Context(out, base, list(args.overrides), steps, n=n, checkpoints=args.checkpoints, seed=args.seed,
                  device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
                  progress=not args.no_progress, extractor=args.extractor,
                  inception_weights=str(args.inception_weights) if args.inception_weights else None)
    out.mkdir(parents=True, exist_ok=True)
    print(f"study {args.name}: base {base}, {steps} steps, {n} samples per measurement -> {out}", flush=True)
    module.run(ctx, "scorekit " + shlex.join(sys.argv[1:] if sys.argv[1:2] == ["study"] else ["study", args.name]))
    print(f"report: {out / 'report.md'}")
    return 0


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=list(STUDIES), metavar="NAME", help=", ".join(STUDIES))
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="overrides of the base preset")
    p.add_argument("--out", required=True, metavar="DIR", help="the study folder (re-running resumes it)")
    p.add_argument("--base", metavar="PRESET", help="the preset every run starts from (default: the study's)")
    p.add_argument("--steps", type=Number(int, 0, 10_000_000, zero_means="the study's default"), default=0,
                   help="training steps of every run (default: the study's)")
    p.add_argument("--n", type=Number(int, 0, 1_000_000, zero_means="the study's default"), default=0,
                   help="samples per FD measurement (default: the study's; 500, few-step 2000)")
    p.add_argument("--checkpoints", type=Number(int, 1, 100), default=5, help="checkpoints measured per run (5)")
    p.add_argument("--seed", type=SEED, default=0, help="the sampling seed")
    p.add_argument("--device", type=device, help=DEVICE_HELP)
    add_meter_args(p)


COMMANDS = [("study", f"the papers' experiments and later ones: {', '.join(STUDY_NAMES)}", _study_args, cmd_study)]
