"""`scorekit fid-ref` and `eval`: reference statistics and the quality of a run, with its protocol."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ScorekitError
from ..metrics.extractors import EXTRACTORS
from .args import COUNT, NO_EMA_HELP, Number, choice_list, device, existing_file, out_paths
from .guiding import guidance_kwargs
from .running import add_sampler_args, check_sampler, searched_schedule

RESOLUTION = Number(int, 1, 4096)


def extractor_args(p: argparse.ArgumentParser, extra: tuple[str, ...] = ()) -> None:
    p.add_argument("--extractor", default="auto", choices=[*EXTRACTORS, *extra],
                   help="feature extractor (auto: for 8x8 grey images the digits proxy, with the HOG FD beside it, "
                        "else Inception; digits-hog: the digits' second judge alone)")
    p.add_argument("--inception-weights", metavar="PATH", type=existing_file,
                   help="local pt_inception-2015-12-05-6726825d.pth or weights-inception-2015-12-05-6726825d.pth "
                        "(or $SCOREKIT_INCEPTION_WEIGHTS)")
    p.add_argument("--inception-unverified", action="store_true",
                   help="use Inception weights whose sha256 does not start with 6726825d (recorded as unverified)")
    p.add_argument("--dinov2-weights", metavar="PATH", type=existing_file,
                   help="local dinov2_vitl14_pretrain.pth for --metrics fd_dinov2 / --extractor dinov2 (or "
                        "$SCOREKIT_DINOV2_WEIGHTS)")
    p.add_argument("--resolution", type=RESOLUTION, help="image size for DATA given as a folder or zip")
    p.add_argument("--channels", type=int, choices=(1, 3), help="channels for DATA given as a folder or zip")


def chosen_extractor(args, images_shape, device=None):
    from ..metrics.extractors import get_extractor

    weights = args.dinov2_weights if args.extractor == "dinov2" else args.inception_weights
    return get_extractor(args.extractor, images_shape=images_shape, weights=weights,
                         device=device or eval_device(args), verify=not args.inception_unverified)


def eval_device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_fid_ref(args: argparse.Namespace) -> int:
    """Reference statistics (mu, sigma in float64, in the .npz format of TTUR / EDM / clean-fid) of a
    dataset: `digits`, a preset or config's data, a CIFAR-10 folder, an image folder or a zip.
    --out FILE.npz, or a folder that receives stats.npz."""
    from ..data.resolve import data_config, load_images
    from ..metrics.frechet import feature_stats, save_stats

    cfg = data_config(args.data, resolution=args.resolution, channels=args.channels)
    ext = chosen_extractor(args, (cfg.channels, cfg.resolution, cfg.resolution))
    paths = out_paths(args.out, ".", "stats.npz", suffixes=(".npz",))
    images, described = load_images(args.data, split=args.split, resolution=args.resolution,
                                    channels=args.channels, max_images=args.n)
    feats, _ = ext(images)
    mu, sigma = feature_stats(feats)
    save_stats(paths.main, mu, sigma, n=len(feats), extractor=ext.name,
               **{k: v for k, v in ext.info.items() if k in ("weights_sha256", "verified")})
    print(f"statistics of {described} with {ext.name} ({feats.shape[1]}-d) -> {paths.main}")
    return 0


def _fid_ref_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="digits, a preset/config, a CIFAR-10 folder, a folder or a zip")
    p.add_argument("--out", required=True, metavar="FILE.npz|DIR",
                   help="the statistics file, or a folder for stats.npz")
    p.add_argument("--split", default="train", choices=("train", "test"), help="data split (default train)")
    p.add_argument("--n", type=Number(int, 0, 10_000_000, zero_means="all"), default=0,
                   help="use the first N images (default 0: all)")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    extractor_args(p)


def cmd_eval(args: argparse.Namespace) -> int:
    """Sample N images from a run, compute FID / IS / KID / precision-recall against a reference, and
    write a JSON that records the whole protocol (N, reference, extractor and its weights' sha256, resize,
    IS splits, seeds, sampler, steps, checkpoint step, EMA). Under torchrun the sampling is sharded and
    the result is the same as with one process. `--checkpoints all` evaluates every checkpoint of the
    run (the papers' checkpoint selection) and writes a CSV and a plot with the best marked.

    Small N: FD is reported from N >= the feature dimension (Inception 2048, digits proxy 128), IS from
    100 images per split, KID and precision/recall from 100 samples; below that the JSON holds null with
    the reason (and the value under values_below_min_n, which the checkpoint sweep ranks by).
    --out DIR receives eval_<N>.json (and checkpoints.csv / .png); --out FILE.json is the JSON itself."""
    from ..data.resolve import data_config
    from ..dist import setup
    from ..evaluation.quality import (
        check_request,
        describe_metrics,
        evaluate_denoiser,
        extra_judges,
        metric_value,
        reference_from,
        write_sweep,
    )
    from ..run import RunDir, load

    dist = setup(args.device)
    metrics = args.metrics
    run = Path(args.run)
    if args.checkpoints == "all":
        if not run.is_dir():
            raise ScorekitError(f"{run}: --checkpoints all needs a run directory")
        paths = [p for _, p in RunDir(run).checkpoints()]
        if not paths:
            raise ScorekitError(f"{run}: no checkpoints")
    else:
        paths = [run]
    first = load(paths[0], ema=not args.no_ema, device=dist.device)
    check_sampler(first, args.sampler or first.config.sampling.sampler, args.steps, args.schedule)
    args.schedule = searched_schedule(args, first, args.sampler or first.config.sampling.sampler)
    out = out_paths(args.out, run if run.is_dir() else run.parent, f"eval_{args.n}.json", suffixes=(".json",))
    ref_spec = args.ref or ("digits" if first.config.data.dataset == "digits" else None)
    if ref_spec is None:
        raise ScorekitError("give --ref stats.npz or --ref DATA (the reference the FID is measured against)")
    if not ref_spec.endswith(".npz"):
        data_config(ref_spec, resolution=args.resolution or first.config.data.resolution,
                    channels=args.channels or first.config.data.channels)
    def reference(spec, extractor):
        return reference_from(spec, extractor, split=args.ref_split, resolution=args.resolution or
                              first.image_shape[-1], channels=args.channels or first.image_shape[0])

    dinov2 = "fd_dinov2" in metrics
    metrics = [m for m in metrics if m != "fd_dinov2"]  # the others are measured with --extractor's features
    ext = ref = None
    if metrics:
        ext = chosen_extractor(args, first.image_shape, dist.device)
        ref = reference(ref_spec, ext)
        check_request(metrics, ref)
    judges = extra_judges(ext, ref_spec, reference, hog=args.extractor == "auto" and "fid" in metrics,
                          dinov2=dinov2, dinov2_weights=args.dinov2_weights, dinov2_ref=args.dinov2_ref,
                          device=dist.device)
    guided = guidance_kwargs(args, first, args.n)
    if args.per_class and not guided:
        raise ScorekitError("--per-class: needs --class (e.g. --class all: an equal share of every class)")
    results = []
    for path in paths:
        denoiser = first if path == paths[0] else load(path, ema=not args.no_ema, device=dist.device)
        res = evaluate_denoiser(denoiser, n=args.n, ref=ref, extractor=ext, metrics=metrics, seed=args.seed,
                                batch_size=args.batch_size, sampler=args.sampler, steps=args.steps,
                                schedule=args.schedule,
                                is_splits=args.is_splits, checkpoint=str(path), dist=dist,
                                progress=not args.no_progress and dist.main, precision="bf16" if args.bf16 else None,
                                compile=args.compile or None, guided=guided, per_class=args.per_class,
                                judges=judges, raw=args.raw)
        results.append(res)
        print(f"step {res['protocol']['checkpoint_step']}: {describe_metrics(res['metrics'])}", flush=True)
        if "per_class" in res["metrics"]:
            m = res["metrics"]
            agreement = f"class agreement {m['agreement']:.3f}; " if "agreement" in m else ""
            fds = ", ".join(f"{c}: {r['fd']:.1f}" for c, r in m["per_class"].items() if "fd" in r)
            print(f"  {agreement}FD per class ({fds})", flush=True)
    if not dist.main:
        return 0
    payload = results[0] if len(results) == 1 else {"checkpoints": results}
    if len(results) > 1:
        key = (metrics[0] if metrics[0] != "pr" else "precision") if metrics else "fd_dinov2"
        rows = [{"step": r["protocol"]["checkpoint_step"],
                 **{k: metric_value(r["metrics"], k) for k in r["metrics"]
                    if k not in ("too_few_samples", "values_below_min_n", "per_class")}} for r in results]
        best = write_sweep(out.companion("checkpoints.csv"), out.companion("checkpoints.png"), rows, key,
                           n=args.n)
        payload["best"] = best
        print(f"best checkpoint by {key}: step {best['step']} -> {out.companion('checkpoints.png')}")
    out.main.parent.mkdir(parents=True, exist_ok=True)
    out.main.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"protocol and metrics -> {out.main}")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    from ..evaluation.quality import METRICS

    p.add_argument("run", metavar="RUN", help="run directory or checkpoint file")
    p.add_argument("--n", "--num-samples", dest="n", type=COUNT, default=1000,
                   help="number of samples (FID is biased at small N: record it); under torchrun write --num-samples")
    p.add_argument("--metrics", type=choice_list(METRICS), default=["fid", "is"],
                   help=f"comma-separated: {', '.join(METRICS)} (default fid,is)")
    p.add_argument("--ref", metavar="stats.npz|DATA", help="reference statistics or data (default for digits runs: "
                   "the digits training split)")
    p.add_argument("--ref-split", default="train", choices=("train", "test"),
                   help="split of DATA used as the reference (default train)")
    p.add_argument("--checkpoints", default="latest", choices=["latest", "all"],
                   help="latest, or all: every checkpoint of the run (the papers' checkpoint selection; CSV and plot)")
    add_sampler_args(p)
    p.add_argument("--is-splits", type=Number(int, 1, 1000), default=10,
                   help="Inception Score splits (1 reproduces DDPM's number)")
    p.add_argument("--out", metavar="DIR|FILE.json", help="where the protocol JSON goes (default RUN/eval)")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--no-ema", action="store_true", help=NO_EMA_HELP)
    p.add_argument("--bf16", action="store_true", help="the network under bf16 autocast (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA graphs on CUDA)")
    p.add_argument("--per-class", action="store_true",
                   help="with --class: the fraction of samples the data's classifier assigns to the class asked for "
                        "(digits: the proxy; else the --classifier at level 0) and FD per class")
    extractor_args(p)
    p.add_argument("--dinov2-ref", metavar="stats.npz", type=existing_file,
                   help="DINOv2 reference statistics (scorekit fid-ref DATA --extractor dinov2) when --ref is a "
                        "statistics file of another extractor")


COMMANDS = [
    ("fid-ref", "reference statistics (mu, sigma) of a dataset", _fid_ref_args, cmd_fid_ref),
    ("eval", "FID / IS / KID / precision-recall of a run, with the protocol", _eval_args, cmd_eval),
]
