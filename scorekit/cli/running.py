"""`scorekit train`, `scorekit sample`, `scorekit bpd`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..config import CHOICES
from ..errors import ScorekitError
from ..images import atomic_write_bytes
from .args import (
    BATCH,
    BATCH_HELP,
    COUNT,
    SEED,
    STEPS_OR_DEFAULT,
    Number,
    add_meter_args,
    class_spec,
    device,
    existing_path,
    out_paths,
    real,
    sigma_interval,
)
from .codec import chain_args
from .guiding import autoguide, guidance_kwargs, guide_spec

SAMPLER_NAMES = CHOICES["sampling.sampler"]
DEFAULT_N, DIGITS_N = 64, 256  # `scorekit sample`'s default number of images; on a digits run


def cmd_train(args: argparse.Namespace) -> int:
    """Train a preset or YAML config into a run directory, or continue a run: `scorekit train RUN` resumes
    the run in RUN with its saved configuration, exactly where it stopped (overrides apply, e.g.
    training.steps=4000 to train longer); the original command run again does the same. SIGINT / SIGTERM
    finish the current step, write a checkpoint and exit 0. Launch with torchrun for data-parallel training.

    examples:
      scorekit train ddpm-digits --out runs/digits
      scorekit train runs/digits training.steps=2400          # continue the run, to 2400 steps
      scorekit train ddpm-cifar10 data.path=/data/cifar-10-batches-py --out runs/cifar10
      torchrun --nproc_per_node 8 -m scorekit train ddpm-cifar10 data.path=... --out runs/cifar10
    """
    from ..training import train_run

    result = train_run(args.config, args.out, args.overrides, device=args.device, progress=not args.no_progress,
                       evaluate=not args.no_eval)
    report_training(result)
    return 0


def report_training(result) -> None:
    """What `train` and `distill` print at the end: the times apart, then the summary's lines."""
    from ..evaluation.report import describe

    if result.summary:
        s = result.summary
        times = [f"training {s['train_s']:.0f} s ({s['trained_steps']} steps)", f"sampling {s['sampling_s']:.0f} s"]
        if "bpd_s" in s:
            times.append(f"bound {s['bpd_s']:.0f} s")
        print(f"trained {result.run} to step {result.step}: {', '.join(times)}")
        for line in describe(s):
            print(line)
    elif not result.interrupted:
        print(f"trained {result.run} to step {result.step} in {result.train_seconds:.0f} s (no evaluation: --no-eval)")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="PRESET|CONFIG.yaml|RUN",
                   help="preset name (see `scorekit presets`), YAML file, or a run directory to continue")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="configuration overrides, e.g. training.steps=1000 data.path=/data")
    p.add_argument("--out", metavar="RUN", help="run directory (default: runs/<preset name>; RUN itself for a run)")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--no-eval", action="store_true", help="skip the sampling and metrics after training")


def _load(args: argparse.Namespace, device=None):
    from ..run import load

    return load(args.run, ema=not args.no_ema, device=device or args.device or _default_device())


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_sampler(denoiser, sampler: str, steps: int = 0, schedule: str | None = None) -> None:
    """Refuse, in one line, what the sampler cannot honour (--steps 0 means the sampler's default): too many steps
    for the model's levels, steps for rk45, a schedule it does not take, a start above the model's trained top."""
    from ..samplers import unhonoured

    found = unhonoured(denoiser, sampler, steps=steps or None, schedule=schedule)
    if found:
        option, why = found
        raise ScorekitError(f"--{option} {dict(steps=steps, schedule=schedule, sampler=sampler)[option]}: {why}")


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample from a run with its EMA weights: writes grid.png, one PNG per image and samples.npz
    (uint8, NHWC). Image i depends only on (--seed, i), whatever --batch-size. On a digits run the
    proxy FD and IS are reported with the real-vs-real floor (from 128 samples on; see --help of eval).

    --out DIR writes into DIR; --out FILE.png writes the grid there and the rest beside it (FILE_images/,
    FILE_samples.npz, FILE_summary.json)."""
    from ..evaluation.generate import generate, sample_values, write_samples
    from ..evaluation.report import describe
    from ..metrics.proxy import proxy_metrics

    denoiser = _load(args)
    cfg = denoiser.config
    digits = cfg.data.dataset == "digits" and cfg.data.resolution == 8 and cfg.data.channels == 1
    if args.n is None:  # on the digits, enough samples for the proxy FD and IS; elsewhere a quick look
        args.n = max(cfg.eval.proxy_samples, DIGITS_N) if digits else DEFAULT_N
    sampler = args.sampler or cfg.sampling.sampler
    check_sampler(denoiser, sampler, args.steps, args.schedule)
    args.schedule = searched_schedule(args, denoiser, sampler)
    paths = out_paths(args.out, Path(args.run) / "samples" / f"seed{args.seed}", "grid.png")
    options = sampler_options(args)
    denoiser, auto = autoguide(args, denoiser)
    guided = guidance_kwargs(args, denoiser, args.n, autoguided=bool(auto))
    t0 = time.perf_counter()
    denoiser.nfe = 0
    images = generate(denoiser, args.n, seed=args.seed, batch_size=args.batch_size, sampler=args.sampler,
                      options=options, progress=not args.no_progress, precision="bf16" if args.bf16 else None,
                      compile=args.compile or None, raw=args.raw, **guided)
    batches = -(-args.n // args.batch_size)
    summary = {"n": args.n, "seed": args.seed, "sampler": sampler,
               "steps": args.steps or cfg.sampling.steps or "the sampler's default",
               "schedule": args.schedule or cfg.sampling.schedule, "nfe_per_image": round(denoiser.nfe / batches, 2),
               "on_values": sample_values(denoiser, raw=args.raw) is not None,
               "checkpoint_step": denoiser.checkpoint_step, "ema": denoiser.uses_ema,
               "seconds": round(time.perf_counter() - t0, 1), **write_samples(paths, images)}
    if guided:
        summary.update(classes=guided["labels"].tolist(), guidance=guided["guidance"],
                       classifier=str(args.classifier) if args.classifier else None,
                       classifier_scale=guided["classifier_scale"])
    summary.update(auto)
    if digits:
        summary["proxy"] = proxy_metrics(images)
    atomic_write_bytes(paths.companion("summary.json"), (json.dumps(summary, indent=2) + "\n").encode())
    print(f"{args.n} samples in {summary['seconds']} s ({sampler}, {summary['nfe_per_image']:g} network evaluations "
          f"per image): grid {paths.main}, images {paths.companion('images')}/, {paths.companion('samples.npz')}")
    for line in describe(summary):
        print(line)
    return 0


def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory (its latest checkpoint) or a checkpoint file")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")


def searched_schedule(args: argparse.Namespace, denoiser, sampler: str) -> str | None:
    """--schedule as given, else `auto` when `scorekit tune-schedule` searched one for this run, sampler and number
    of steps (RUN/schedules.json), else None (the run's sampling.schedule)."""
    from ..samplers.schedules import searched

    if args.schedule:
        return args.schedule
    return "auto" if searched(denoiser, sampler, args.steps or denoiser.config.sampling.steps) is not None else None


def sampler_options(args: argparse.Namespace) -> dict:
    """The sampler options given on the command line (--steps, --schedule)."""
    return {**({"steps": args.steps} if args.steps else {}), **({"schedule": args.schedule} if args.schedule else {})}


def add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=SAMPLER_NAMES, metavar="NAME",
                   help=f"{', '.join(SAMPLER_NAMES)} (default: the run's)")
    p.add_argument("--steps", type=STEPS_OR_DEFAULT, default=0, help="sampler steps (default 0: the sampler's own)")
    p.add_argument("--schedule", choices=CHOICES["sampling.schedule"],
                   help="time-step schedule (default: the one tune-schedule searched for this run, sampler and "
                        "steps if any, else the run's sampling.schedule; auto = the searched one if any)")
    p.add_argument("--seed", type=SEED, default=0, help="base seed; image i uses (seed, i)")
    p.add_argument("--raw", action="store_true",
                   help="keep the sampler's continuous output (rounded to 8 bits); by default a run that learnt its "
                        "data's values (data.values: the digits' 17 grey levels) writes its samples on them")
    p.add_argument("--batch-size", type=BATCH, default=256, help=BATCH_HELP)
    p.add_argument("--class", dest="klass", type=class_spec, metavar="C[,C...]|all",
                   help="draw these classes (a list repeats; all: an equal share of each)")
    p.add_argument("--guidance", type=real(0, 100), metavar="S",
                   help="classifier-free guidance scale: 1 the conditional model, 0 the unconditional "
                        "(default: the run's sampling.guidance)")
    p.add_argument("--classifier", type=existing_path, metavar="DIR", help="classifier guidance: a classifier run")
    p.add_argument("--guide", type=guide_spec, metavar="G|self|none",
                   help="autoguidance (Karras et al. 2024; `scorekit sample` only): a weaker run or checkpoint of the "
                        "same family, process and image shape, `self` the guide the run kept (training.guide_at), "
                        "`none` unguided; --guidance W sets D = D_G + W (D - D_G) (with `self` and no --guidance: the "
                        "weight `scorekit study autoguidance` measured best, in RUN/checkpoints/guide.json)")
    p.add_argument("--guidance-interval", type=sigma_interval, metavar="SIGMA_LO,SIGMA_HI",
                   help="guide (classifier-free or autoguidance) only for sigma in (SIGMA_LO, SIGMA_HI]")
    p.add_argument("--classifier-scale", type=real(0, 1000), metavar="K", help="classifier guidance scale (default 1)")


def _sample_args(p: argparse.ArgumentParser) -> None:
    _common_run_args(p)
    p.add_argument("--n", "--num-samples", dest="n", type=COUNT, default=None,
                   help=f"number of images (default {DEFAULT_N}; on a digits run {DIGITS_N}, or the run's "
                        "eval.proxy_samples if more: enough for the proxy FD and IS)")
    add_sampler_args(p)
    p.add_argument("--out", metavar="DIR|FILE.png", help="output folder (default RUN/samples/seed<S>) or grid file")
    p.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA graphs on CUDA)")


def cmd_bpd(args: argparse.Namespace) -> int:
    """Bits/dim of a run on a data split, averaged over --n images. --method vlb (DDPM runs): the full
    variational bound, all T terms, the discretized decoder and the prior (the authors' calc_bpd_loop).
    --method ode (any run): the exact likelihood of the probability-flow ODE with uniform dequantization
    and the change of scale to 8-bit data made explicit; Hutchinson's trace estimator or the exact trace."""
    from ..data.sources import build_source
    from ..dist import setup
    from ..evaluation.bpd import bits_per_dim

    dist = setup(args.device)
    denoiser = _load(args, dist.device)
    if denoiser.consistency:
        raise ScorekitError(f"{args.run}: a consistency model (model.consistency=true) has no likelihood to measure: "
                            "its network maps a noisy image to the end of its ODE trajectory, it is not a denoiser "
                            "(measure its teacher, or the samples with `scorekit eval`)")
    if args.method == "vlb" and denoiser.process.kind not in ("vp", "subvp"):
        raise ScorekitError(f"--method vlb: the variational bound is computed for VP and sub-VP runs, this is a "
                            f"{denoiser.process.kind} run (its discrete chain is not the model); use --method ode")
    if args.codec and args.method != "vlb":
        raise ScorekitError("--codec: the codec codes at the variational bound; use it with --method vlb")
    if args.codec:
        from ..codec import check_codable

        check_codable(denoiser)
    if args.levels:
        from ..codec import coding_chain
        from .codec import chain_choice

        if args.method != "vlb":
            raise ScorekitError("--levels: the bound of a shorter chain is a --method vlb figure")
        denoiser = coding_chain(denoiser, **chain_choice(args, denoiser))
    build_source(denoiser.config.data, args.split)  # a missing split fails before any work
    ode = {"trace": args.trace, "rtol": args.rtol, "atol": args.atol} if args.method == "ode" else {}
    res = bits_per_dim(denoiser, split=args.split, n=args.n, seed=args.seed, batch_size=args.batch_size,
                       method=args.method, progress=not args.no_progress and dist.main, dist=dist, **ode)
    if args.codec and dist.main:
        res["codec"] = _codec_rate(denoiser, args)
    if args.json:
        print(json.dumps(res))
    elif args.method == "vlb":
        print(f"bits/dim (variational bound) on {res['n']} {res['split']} images: {res['bpd']:.4f} +- "
              f"{res['bpd_sem']:.4f} (prior {res['prior_bpd']:.2e}, decoder {res['decoder_bpd']:.4f})")
        if args.codec:
            c = res["codec"]
            print(f"bits/dim (measured: bits-back ANS, scorekit compress) on the same images: {c['bits_per_dim']:.4f} "
                  f"({c['bits_per_dim'] / res['bpd'] - 1:+.1%} against the bound; {c['file_bits_per_dim']:.4f} with "
                  f"the {c['initial_bits']} initial bits and the header; {c['seconds']:.0f} s)")
    else:
        print(f"bits/dim (probability-flow ODE, {args.trace} trace) on {res['n']} {res['split']} images: "
              f"{res['bpd']:.4f} +- {res['bpd_sem']:.4f}")
    return 0


def _codec_rate(denoiser, args) -> dict:
    """Compress the images the bound was measured on (scorekit/codec.py) and check the round trip."""
    import torch

    from ..codec import compress, decompress
    from ..data.sources import build_source

    source = build_source(denoiser.config.data, args.split)
    n = len(source) if args.n <= 0 else min(args.n, len(source))
    images = torch.stack([source[i] for i in range(n)])
    t0 = time.perf_counter()
    data, rates = compress(denoiser.to("cpu"), images)  # (already on --levels: its chain is coded whole)
    rates["seconds"] = time.perf_counter() - t0
    if not torch.equal(decompress(denoiser, data), images):
        raise ScorekitError("--codec: the round trip did not reproduce the images")
    return rates


def _bpd_args(p: argparse.ArgumentParser) -> None:
    _common_run_args(p)
    p.add_argument("--split", default="test", choices=("train", "test"), help="data split (default test)")
    p.add_argument("--n", type=Number(int, 0, 10_000_000, zero_means="the whole split"), default=0,
                   help="number of images (default 0: the whole split)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the noise the bound is estimated with; image i "
                   "uses (seed, i) (default 0)")
    p.add_argument("--batch-size", type=BATCH, default=100, help=BATCH_HELP)
    p.add_argument("--method", default="vlb", choices=["vlb", "ode"], help="variational bound (DDPM) or ODE")
    p.add_argument("--trace", default="hutchinson", choices=["hutchinson", "exact"], help="ODE divergence")
    p.add_argument("--rtol", type=real(0, 1, open_lo=True), default=1e-5, help="ODE solver tolerances (default 1e-5)")
    p.add_argument("--atol", type=real(0, 1, open_lo=True), default=1e-5, help="absolute tolerance (default 1e-5)")
    chain_args(p, "0: the paper's bound on all T levels")
    p.add_argument("--codec", action="store_true", help="also compress the same images with scorekit compress "
                   "(bits-back ANS) and print the measured codelength beside the bound")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


COMMANDS = [
    ("train", "train a model, or continue a run", _train_args, cmd_train),
    ("sample", "sample images from a run", _sample_args, cmd_sample),
    ("bpd", "bits/dim of a run on a data split", _bpd_args, cmd_bpd),
]


def cmd_tune_schedule(args: argparse.Namespace) -> int:
    """Search a time-step schedule for this run, sampler and number of steps on a cheap criterion: the FD of
    --n samples (digits proxy on digits runs; Inception elsewhere, with --inception-weights), all drawn
    with the same seed, over a family of schedules (EDM's rho spacing, uniform, quadratic) and then one
    level at a time. The result, checked on two other seeds against the default schedule, is saved in
    RUN/schedules.json; `scorekit sample RUN --sampler S --steps K` (schedule auto) then uses it."""
    from ..evaluation.quality import FrechetMeter
    from ..evaluation.schedule_search import EveryJudge, search_schedule
    from ..run import RunDir, save_schedule

    run = Path(args.run)
    if not (run / "config.yaml").is_file():
        raise ScorekitError(f"{run}: tune-schedule needs a run directory (the schedule is saved there)")
    denoiser = _load(args)
    sampler = args.sampler or denoiser.config.sampling.sampler
    if sampler in ("langevin", "rk45"):
        raise ScorekitError(f"--sampler {sampler}: has no step schedule to search (Langevin: per-level steps; "
                            "rk45: adaptive)")
    check_sampler(denoiser, sampler, args.steps)
    meter = FrechetMeter(denoiser.config, extractor=args.extractor, weights=args.inception_weights,
                         device=str(denoiser.device))
    criterion = EveryJudge(meter) if args.criterion == "all" else meter
    say = print if not args.no_progress else (lambda text: None)
    res = search_schedule(denoiser, sampler, args.steps, criterion, n=args.n, seed=args.seed, rounds=args.rounds,
                          say=say)
    path = save_schedule(RunDir(run).path, sampler, args.steps, res, f"{criterion.name} of {args.n} samples")
    v = res["validation"]
    print(f"{sampler} at {args.steps} steps: {criterion.name} {res['value']:.2f} on the search seed (default schedule "
          f"{res['default_value']:.2f}); on seeds {res['validation_seeds']}: {[round(x, 2) for x in v['searched']]} "
          f"against {[round(x, 2) for x in v['default']]} -> {path}")
    return 0


def _tune_args(p: argparse.ArgumentParser) -> None:
    _common_run_args(p)
    p.add_argument("--sampler", choices=SAMPLER_NAMES, metavar="NAME", help="default: the run's")
    p.add_argument("--steps", type=Number(int, 2, 1000), required=True, help="the budget the schedule is for")
    p.add_argument("--n", type=Number(int, 128, 100_000), default=256, help="samples per evaluation (256)")
    p.add_argument("--rounds", type=Number(int, 0, 10), default=2, help="rounds of one-level moves (2)")
    p.add_argument("--seed", type=SEED, default=0, help="the seed of the search's samples (default 0)")
    p.add_argument("--criterion", choices=("first", "all"), default="first",
                   help="first: the first judge's FD (the digits proxy, or Inception); all: the sum over every judge "
                        "(on the digits the proxy and the HOG FD) of its FD over its value on the first schedule "
                        "tried, so that no one judge is flattered (default first)")
    add_meter_args(p)


COMMANDS.append(("tune-schedule", "search a time-step schedule for a run, sampler and step budget", _tune_args,
                 cmd_tune_schedule))
