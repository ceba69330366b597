"""`scorekit fid-ref`, `eval`, `neighbours`, `interpolate`, `progressive`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ScorekitError
from ..metrics.extractors import EXTRACTORS
from .args import COUNT, NO_EMA_HELP, SEED, SEED_HELP, Number, choice_list, device, existing_file, out_paths
from .running import add_sampler_args, check_sampler, guidance_kwargs

RESOLUTION = Number(int, 1, 4096)


def _extractor_args(p: argparse.ArgumentParser, extra: tuple[str, ...] = ()) -> None:
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


def _extractor(args, images_shape, device=None):
    from ..metrics.extractors import get_extractor

    weights = args.dinov2_weights if args.extractor == "dinov2" else args.inception_weights
    return get_extractor(args.extractor, images_shape=images_shape, weights=weights,
                         device=device or _device(args), verify=not args.inception_unverified)


def _device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_fid_ref(args: argparse.Namespace) -> int:
    """Reference statistics (mu, sigma in float64, in the .npz format of TTUR / EDM / clean-fid) of a
    dataset: `digits`, a preset or config's data, a CIFAR-10 folder, an image folder or a zip.
    --out FILE.npz, or a folder that receives stats.npz."""
    from ..data.resolve import data_config, load_images
    from ..metrics.frechet import feature_stats, save_stats

    cfg = data_config(args.data, resolution=args.resolution, channels=args.channels)
    ext = _extractor(args, (cfg.channels, cfg.resolution, cfg.resolution))
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
    _extractor_args(p)


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
    from ..quality import (
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
        ext = _extractor(args, first.image_shape, dist.device)
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
    from ..quality import METRICS

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
    _extractor_args(p)
    p.add_argument("--dinov2-ref", metavar="stats.npz", type=existing_file,
                   help="DINOv2 reference statistics (scorekit fid-ref DATA --extractor dinov2) when --ref is a "
                        "statistics file of another extractor")


def _samples_from(args) -> tuple:
    """(uint8 samples, description) from a run (sampled now) or from a samples.npz."""
    import numpy as np
    import torch

    src = Path(args.samples)
    if src.suffix == ".npz":
        try:
            with np.load(src, allow_pickle=False) as f:
                if "samples" not in f:
                    raise ScorekitError(f"{src}: expected an array 'samples' (uint8, NHWC)")
                arr = f["samples"][:args.n]
        except (OSError, ValueError) as e:
            raise ScorekitError(f"{src}: not a readable samples.npz ({e})") from None
        if arr.dtype != np.uint8 or arr.ndim != 4:
            raise ScorekitError(f"{src}: 'samples' must be uint8 NHWC, got {arr.dtype} {arr.shape}")
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), str(src)
    from ..evaluate import generate
    from ..run import load

    denoiser = load(src, device=_device(args))
    return generate(denoiser, args.n, seed=args.seed, progress=not args.no_progress), f"{args.n} samples of {src}"


def _samples_shape(args) -> tuple[int, int, int]:
    """(C, H, W) of the samples a RUN or SAMPLES.npz gives, read without sampling."""
    import numpy as np

    src = Path(args.samples)
    if src.suffix == ".npz":
        if not src.is_file():
            raise ScorekitError(f"{src}: no such samples file")
        try:
            with np.load(src, allow_pickle=False) as f:
                shape = f["samples"].shape if "samples" in f else None
        except (OSError, ValueError) as e:
            raise ScorekitError(f"{src}: not a readable samples.npz ({e})") from None
        if shape is None or len(shape) != 4:
            raise ScorekitError(f"{src}: expected an array 'samples' (uint8, NHWC)")
        return shape[3], shape[1], shape[2]
    from ..run import config_of

    cfg = config_of(src)
    return cfg.data.channels, cfg.data.resolution, cfg.data.resolution


def cmd_neighbours(args: argparse.Namespace) -> int:
    """The memorisation check of NCSNv2: each sample beside its nearest training images in pixel l2
    (and, after a gap, in the feature space of the extractor). --out DIR receives neighbours.png;
    --out FILE.png is the figure itself."""
    from ..data.resolve import data_config, load_images
    from ..figures import nearest_neighbours, neighbours_grid

    c, h, _ = _samples_shape(args)
    data_config(args.data, resolution=args.resolution or h, channels=args.channels or c)
    ext = None
    if args.extractor != "none":
        try:
            ext = _extractor(args, (c, h, h))
        except ScorekitError as e:
            if args.extractor != "auto":
                raise
            print(f"feature-space neighbours skipped: {e}")
    src = Path(args.samples)
    out = out_paths(args.out, src if src.is_dir() else src.parent, "neighbours.png")
    train, train_desc = load_images(args.data, resolution=args.resolution or h, channels=args.channels or c)
    if (train.shape[1], train.shape[2]) != (c, h):
        raise ScorekitError(f"--data {args.data}: images are {tuple(train.shape[1:])}, the samples ({c}, {h}, {h})")
    if args.k > len(train):
        raise ScorekitError(f"--k {args.k}: the training data holds only {len(train)} images")
    samples, described = _samples_from(args)
    feats = {"sample_features": ext(samples)[0], "train_features": ext(train)[0]} if ext is not None else {}
    nn_idx = nearest_neighbours(samples, train, args.k, **feats)
    neighbours_grid(out.main, samples, train, nn_idx, feature_space=f"feature space ({ext.name})" if ext else "")
    d = (samples.flatten(1).double()[:, None] - train[nn_idx["pixel"][:, 0]].flatten(1).double()[:, None]).norm(dim=-1)
    print(f"{described} vs {train_desc}: mean l2 to the nearest training image {float(d.mean()):.1f} "
          f"(uint8 units) -> {out.main}")
    return 0


def _neighbours_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("samples", metavar="RUN|SAMPLES.npz", help="a run (sampled now) or a samples.npz")
    p.add_argument("--data", required=True, help="training data: digits, a preset/config, a folder, ...")
    p.add_argument("--n", type=Number(int, 1, 1024), default=16, help="number of samples (rows, default 16)")
    p.add_argument("--k", type=Number(int, 1, 100), default=5, help="neighbours per sample")
    p.add_argument("--seed", type=SEED, default=0, help=SEED_HELP)
    p.add_argument("--out", metavar="DIR|FILE.png", help="default: next to RUN / SAMPLES.npz")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    _extractor_args(p, extra=("none",))


def cmd_interpolate(args: argparse.Namespace) -> int:
    """DDPM: encode two test images to step t with q, mix with lambda from 0 to 1, decode with the reverse
    chain (the paper's Fig. 8), one row per t. NCSN: the authors' interpolation sampler (rows of images
    whose Langevin noise is rotated from one draw to another). --out DIR receives interpolation.png;
    --out FILE.png is the figure itself."""
    from ..data.sources import build_source
    from ..images import from_uint8, to_uint8
    from ..plots import labeled_grid
    from ..rng import ImageRNG
    from ..run import load
    from ..samplers.langevin import sample_langevin_interpolation

    d = load(args.run, device=_device(args))
    run = Path(args.run)
    out = out_paths(args.out, run if run.is_dir() else run.parent, "interpolation.png")
    if d.process.kind == "vp":
        from ..figures import ddpm_interpolation

        test = build_source(d.config.data, "test" if d.config.data.dataset in ("digits", "cifar10") else "train")
        T = d.process.num_levels
        for i in args.pair:
            if i >= len(test):
                raise ScorekitError(f"--pair {i}: the split holds {len(test)} images (0..{len(test) - 1})")
        for t in args.t or []:
            if t >= T:
                raise ScorekitError(f"--t {t}: the model's levels are 0..{T - 1}")
        a, b = (from_uint8(test[i], d.data_range) for i in args.pair)
        ts = [min(T - 1, round(f * T) - 1) for f in (0.25, 0.5, 0.75, 1.0)] if not args.t else args.t
        grid = ddpm_interpolation(d, a, b, ts=ts, lambdas=args.lambdas, seed=args.seed)
        cols = [f"image {args.pair[0]}"] + [f"λ={v:.2f}" for v in
                                            [i / (args.lambdas - 1) for i in range(args.lambdas)]] + [
                    f"image {args.pair[1]}"]
        labeled_grid(out.main, grid, title="DDPM interpolation (Fig. 8): encode both to step t, mix, decode",
                     col_labels=cols, row_labels=[f"t = {t + 1}" for t in ts])
        print(f"rows t = {[t + 1 for t in ts]} (paper's index), columns: source, lambda 0..1, source -> {out.main}")
    else:
        x = sample_langevin_interpolation(d, args.rows, args.lambdas, ImageRNG(args.seed, args.rows, d.device),
                                          n_steps_each=d.config.sampling.n_steps_each,
                                          step_lr=d.config.sampling.step_lr, denoise=d.config.sampling.denoise,
                                          progress=not args.no_progress)
        cells = to_uint8(x, d.data_range).reshape(args.rows, args.lambdas, *x.shape[1:])
        angles = [90 * i / (args.lambdas - 1) for i in range(args.lambdas)]
        labeled_grid(out.main, cells, title="NCSN interpolation: Langevin noise p cos θ + q sin θ",
                     col_labels=[f"θ={a:.0f}°" for a in angles], row_labels=[f"row {r}" for r in range(args.rows)])
        print(f"{args.rows} rows of {args.lambdas} interpolated samples -> {out.main}")
    return 0


def _interpolate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory (its latest checkpoint) or a checkpoint file")
    p.add_argument("--pair", type=Number(int, 0, 10_000_000), nargs=2, default=[0, 1],
                   help="indices of the two test images (DDPM)")
    p.add_argument("--t", type=Number(int, 0, 1_000_000), nargs="*",
                   help="code-index steps to encode to (DDPM; default T/4, T/2, 3T/4, T)")
    p.add_argument("--lambdas", type=Number(int, 2, 101), default=11, help="points from one end to the other")
    p.add_argument("--rows", type=Number(int, 1, 64), default=4, help="rows (NCSN)")
    p.add_argument("--seed", type=SEED, default=0, help=SEED_HELP)
    p.add_argument("--out", metavar="DIR|FILE.png", help="default: RUN/interpolation.png")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1, mps (default: cuda if available)")


def cmd_progressive(args: argparse.Namespace) -> int:
    """DDPM progressive generation (the predicted x0 along the chain, Fig. 6) and the rate-distortion
    curve of the progressive lossy code on a data split (Fig. 5): rate = the KL terms sent from T down
    to t, distortion = the RMSE of the x0 prediction on the [0, 255] scale; PNGs and a CSV.
    --out DIR receives progressive.png, rate_distortion.png and .csv; --out FILE.png names the first."""
    from ..data.sources import build_source
    from ..figures import progressive, rate_distortion, write_rate_distortion
    from ..plots import labeled_grid
    from ..run import load

    d = load(args.run, device=_device(args))
    if d.process.kind != "vp":
        raise ScorekitError("progressive generation and rate-distortion are DDPM (VP) figures")
    T = d.process.num_levels
    if args.snapshots > T:
        raise ScorekitError(f"--snapshots {args.snapshots}: the chain has only {T} steps")
    source = build_source(d.config.data, args.split) if args.rd_images else None
    run = Path(args.run)
    out = out_paths(args.out, (run if run.is_dir() else run.parent) / "progressive", "progressive.png")
    frames = progressive(d, args.n, snapshots=args.snapshots, seed=args.seed)
    import numpy as np

    ts = sorted({int(v) for v in np.linspace(T - 1, 0, args.snapshots).round()}, reverse=True)
    labeled_grid(out.main, frames, title="Progressive generation (Fig. 6): the predicted x0 along the chain",
                 col_labels=[f"t = {t + 1}" for t in ts] + ["sample"],
                 row_labels=[f"sample {i}" for i in range(args.n)])
    print(f"predicted x0 along the chain (columns t = T .. 1, then the sample) -> {out.main}")
    if source is not None:
        import torch

        images = torch.stack([source[i] for i in range(min(args.rd_images, len(source)))])
        rd = rate_distortion(d, images, seed=args.seed)
        files = write_rate_distortion(out.companion("rate_distortion.csv"), out.companion("rate_distortion.png"), rd)
        print(f"rate-distortion on {rd['n']} {args.split} images: total {rd['total_bpd']:.3f} bits/dim = rate "
              f"{rd['rate'][1]:.3f} + distortion term {rd['decoder_bpd']:.3f} -> {files['png']}, {files['csv']}")
    return 0


def _progressive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory (its latest checkpoint) or a checkpoint file")
    p.add_argument("--n", type=Number(int, 1, 256), default=8, help="samples (rows)")
    p.add_argument("--snapshots", type=Number(int, 2, 1000), default=10, help="x0 predictions per row")
    p.add_argument("--rd-images", type=Number(int, 0, 100_000, zero_means="skip"), default=100,
                   help="images for the rate-distortion curve (0: skip)")
    p.add_argument("--split", default="test", choices=("train", "test"), help="data split (default test)")
    p.add_argument("--seed", type=SEED, default=0, help=SEED_HELP)
    p.add_argument("--out", metavar="DIR|FILE.png", help="default: RUN/progressive/")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1, mps (default: cuda if available)")


COMMANDS = [
    ("fid-ref", "reference statistics (mu, sigma) of a dataset", _fid_ref_args, cmd_fid_ref),
    ("eval", "FID / IS / KID / precision-recall of a run, with the protocol", _eval_args, cmd_eval),
    ("neighbours", "samples beside their nearest training images", _neighbours_args, cmd_neighbours),
    ("interpolate", "interpolations (DDPM Fig. 8; NCSN's interpolation sampler)", _interpolate_args, cmd_interpolate),
    ("progressive", "progressive generation and rate-distortion (DDPM)", _progressive_args, cmd_progressive),
]
