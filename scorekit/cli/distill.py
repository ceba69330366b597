"""`scorekit distill`: a student that generates in one or two network evaluations, from any run of either family."""

from __future__ import annotations

import argparse

from .args import DEVICE_HELP, Number, device


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil a trained run (the teacher: DDPM / VP, NCSN / VE or sub-VP; eps, x0 or score outputs; EDM
    preconditioning or not; class-conditional runs at their guidance scale) into a few-step student. The student
    starts from the teacher's EMA weights; DIR is an ordinary run (config.yaml, checkpoints, metrics.jsonl, a final
    grid and proxy FD; `scorekit train DIR` resumes it, bit for bit). Methods:

      cd   consistency distillation (Song et al. 2023): one Heun step of the teacher between adjacent levels
           (the default: the best FD for its cost on the digits, see the README)
      ect  easy consistency tuning (Geng et al. 2024): no teacher evaluations, dt -> 0
      pd   progressive distillation (Salimans & Ho 2022): halving rounds of the teacher's deterministic sampler
      reflow  rectified flow (Liu et al. 2022): the teacher's deterministic sampler maps fewstep.pairs noises to
           endpoints (kept in DIR/pairs/, resumable), and a flow student learns the straight path between each
           pair (U-shaped t, 2-rectified flow++); it samples with 1, 2 or 4 Euler steps uniform in t

    A consistency student samples with multistep consistency sampling (`scorekit sample DIR --steps K`, K network
    evaluations; 2 by default); a progressive student with its last round's DDIM steps; a reflow student with K
    Euler steps (1 by default).

    examples:
      scorekit distill runs/digits --out runs/digits-cd
      scorekit distill runs/ncsnv2-unet --method ect --out runs/ncsn-ect training.steps=600
      scorekit sample runs/digits-cd --steps 1
      scorekit distill runs/fm --method reflow --out runs/fm-reflow fewstep.pairs=20000
      scorekit distill runs/ncsnv2-unet --method reflow --out runs/ncsn-rf fewstep.pair_sampler="dpm2m 5"
    (reflow: fewstep.pair_sampler "NAME STEPS [SCHEDULE]" chooses the teacher's deterministic sampler; fewstep.init
    auto | teacher | scratch the student's start, auto = the teacher's weights if its data are in [-1, 1])"""
    from ..training import train_run
    from ..training.distill import prepare
    from .running import report_training

    run = prepare(args.run, args.out, args.method, args.steps, args.overrides)
    result = train_run(run.path, None, [], device=args.device, progress=not args.no_progress,
                       evaluate=not args.no_eval)
    report_training(result)
    return 0


def _distill_args(p: argparse.ArgumentParser) -> None:
    from ..training.distill import METHODS

    p.add_argument("run", metavar="RUN", help="the teacher: a finished run directory of either family")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="overrides of the student's configuration, "
                   "e.g. training.lr=0.001 fewstep.levels=40")
    p.add_argument("--out", required=True, metavar="DIR", help="the student's run directory (run again: resumes)")
    p.add_argument("--method", choices=METHODS, default=METHODS[0], help=f"{', '.join(METHODS)} (default "
                   f"{METHODS[0]})")
    p.add_argument("--steps", type=Number(int, 0, 10_000_000, zero_means="the method's default fraction of the "
                                          "teacher's training"), default=0,
                   help="training steps of the student (default: a fraction of the teacher's: ect and pd 0.4, cd 0.25, "
                        "reflow 0.5)")
    p.add_argument("--device", type=device, help=DEVICE_HELP)
    p.add_argument("--no-eval", action="store_true", help="skip the sampling and metrics after distillation")


COMMANDS = [("distill", "a one- or two-step student of a run (consistency distillation / tuning, progressive)",
             _distill_args, cmd_distill)]
