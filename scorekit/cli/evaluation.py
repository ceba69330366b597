"""`scorekit fid-ref`, `eval`, `neighbours`, `interpolate`, `progressive`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ScorekitError


def _extractor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extractor", default="auto", choices=["auto", "inception", "digits-proxy"],
                   help="feature extractor (auto: the digits proxy for 8x8 grey images, else Inception)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="local pt_inception-2015-12-05-6726825d.pth (or $SCOREKIT_INCEPTION_WEIGHTS)")
    p.add_argument("--resolution", type=int, help="image size for DATA given as a folder or zip")
    p.add_argument("--channels", type=int, choices=(1, 3), help="channels for DATA given as a folder or zip")


def _device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_fid_ref(args: argparse.Namespace) -> int:
    """Reference statistics (mu, sigma in float64, in the .npz format of TTUR / EDM / clean-fid) of a
    dataset: `digits`, a preset or config's data, a CIFAR-10 folder, an image folder or a zip."""
    from ..data.resolve import load_images
    from ..metrics.extractors import get_extractor
    from ..metrics.frechet import feature_stats, save_stats

    images, described = load_images(args.data, split=args.split, resolution=args.resolution,
                                     channels=args.channels, max_images=args.n)
    ext = get_extractor(args.extractor, images_shape=tuple(images.shape[1:]), weights=args.inception_weights,
                        device=_device(args))
    feats, _ = ext(images)
    mu, sigma = feature_stats(feats)
    save_stats(args.out, mu, sigma, n=len(feats), extractor=ext.name)
    print(f"statistics of {described} with {ext.name} ({feats.shape[1]}-d) -> {args.out}")
    return 0


def _fid_ref_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="digits, a preset/config, a CIFAR-10 folder, a folder or a zip")
    p.add_argument("--out", required=True, metavar="stats.npz")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=0, help="use the first N images (default all)")
    p.add_argument("--device")
    _extractor_args(p)


def cmd_eval(args: argparse.Namespace) -> int:
    """Sample N images from a run, compute FID / IS / KID / precision-recall against a reference, and
    write a JSON that records the whole protocol (N, reference, extractor and its weights hash, resize,
    IS splits, seeds, sampler, steps, checkpoint step, EMA). Under torchrun the sampling is sharded and
    the result is the same as with one process. `--checkpoints all` evaluates every checkpoint of the
    run (the papers' checkpoint selection) and writes a CSV and a plot with the best marked."""
    from ..dist import setup
    from ..metrics.extractors import get_extractor
    from ..quality import evaluate_denoiser, reference_from, write_sweep
    from ..run import RunDir, load

    dist = setup(args.device)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
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
    ext = get_extractor(args.extractor, images_shape=first.image_shape, weights=args.inception_weights,
                        device=dist.device)
    ref_spec = args.ref or ("digits" if first.config.data.dataset == "digits" else None)
    if ref_spec is None:
        raise ScorekitError("give --ref stats.npz or --ref DATA (the reference the FID is measured against)")
    ref = reference_from(ref_spec, ext, split=args.ref_split, resolution=args.resolution, channels=args.channels)
    results = []
    for path in paths:
        denoiser = first if path == paths[0] else load(path, ema=not args.no_ema, device=dist.device)
        res = evaluate_denoiser(denoiser, n=args.n, ref=ref, extractor=ext, metrics=metrics, seed=args.seed,
                                batch_size=args.batch_size, sampler=args.sampler, steps=args.steps,
                                is_splits=args.is_splits, checkpoint=str(path), dist=dist,
                                progress=not args.no_progress and dist.main, precision="bf16" if args.bf16 else None,
                                compile=args.compile or None)
        results.append(res)
        if dist.main:
            values = ", ".join(f"{k} {v:.4g}" for k, v in res["metrics"].items())
            print(f"step {res['protocol']['checkpoint_step']}: {values}", flush=True)
    if not dist.main:
        return 0
    out = Path(args.out or (run if run.is_dir() else run.parent) / f"eval_{args.n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = results[0] if len(results) == 1 else {"checkpoints": results}
    if len(results) > 1:
        rows = [{"step": r["protocol"]["checkpoint_step"], **r["metrics"]} for r in results]
        best = write_sweep(out.parent, rows, metrics[0] if metrics[0] != "pr" else "precision")
        payload["best"] = best
        print(f"best checkpoint by {metrics[0]}: step {best['step']} -> {out.parent / 'checkpoints.png'}")
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"protocol and metrics -> {out}")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory or checkpoint file")
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=1000,
                   help="number of samples (FID is biased at small N: record it); under torchrun write --num-samples")
    p.add_argument("--metrics", default="fid,is", help="comma-separated: fid, is, kid, pr (default fid,is)")
    p.add_argument("--ref", metavar="stats.npz|DATA", help="reference statistics or data (default for digits runs: "
                   "the digits training split)")
    p.add_argument("--ref-split", default="train", help="split of DATA used as the reference (default train)")
    p.add_argument("--checkpoints", default="latest", choices=["latest", "all"])
    p.add_argument("--sampler")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--is-splits", type=int, default=10, help="Inception Score splits (1 reproduces DDPM's number)")
    p.add_argument("--out", metavar="JSON")
    p.add_argument("--device")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--bf16", action="store_true", help="the network under bf16 autocast (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA graphs on CUDA)")
    _extractor_args(p)


def _samples_from(args) -> tuple:
    """(uint8 samples, description) from a run (sampled now) or from a samples.npz / image folder."""
    import numpy as np
    import torch

    src = Path(args.samples)
    if src.suffix == ".npz":
        with np.load(src, allow_pickle=False) as f:
            if "samples" not in f:
                raise ScorekitError(f"{src}: expected an array 'samples' (uint8, NHWC)")
            return torch.from_numpy(f["samples"][:args.n]).permute(0, 3, 1, 2).contiguous(), str(src)
    from ..evaluate import generate
    from ..run import load

    denoiser = load(src, device=_device(args))
    return generate(denoiser, args.n, seed=args.seed), f"{args.n} samples of {src}"


def cmd_neighbours(args: argparse.Namespace) -> int:
    """The memorisation check of NCSNv2: each sample beside its nearest training images in pixel l2
    (and, after a gap, in the feature space of the extractor)."""
    from ..data.resolve import load_images
    from ..figures import nearest_neighbours, neighbours_grid
    from ..metrics.extractors import get_extractor

    samples, described = _samples_from(args)
    train, train_desc = load_images(args.data, resolution=args.resolution or samples.shape[-1],
                                    channels=args.channels or samples.shape[1])
    feats = {}
    if args.extractor != "none":
        try:
            ext = get_extractor(args.extractor, images_shape=tuple(samples.shape[1:]),
                                weights=args.inception_weights)
            feats = {"sample_features": ext(samples)[0], "train_features": ext(train)[0]}
        except ScorekitError as e:
            print(f"feature-space neighbours skipped: {e}")
    nn_idx = nearest_neighbours(samples, train, args.k, **feats)
    out = Path(args.out)
    neighbours_grid(out, samples, train, nn_idx)
    d = (samples.flatten(1).double()[:, None] - train[nn_idx["pixel"][:, 0]].flatten(1).double()[:, None]).norm(dim=-1)
    print(f"{described} vs {train_desc}: mean l2 to the nearest training image {float(d.mean()):.1f} "
          f"(uint8 units) -> {out}")
    return 0


def _neighbours_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("samples", metavar="RUN|SAMPLES.npz", help="a run (sampled now) or a samples.npz")
    p.add_argument("--data", required=True, help="training data: digits, a preset/config, a folder, ...")
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--k", type=int, default=5, help="neighbours per sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="neighbours.png")
    p.add_argument("--device")
    p.add_argument("--extractor", default="auto", choices=["auto", "inception", "digits-proxy", "none"])
    p.add_argument("--inception-weights", metavar="PATH")
    p.add_argument("--resolution", type=int)
    p.add_argument("--channels", type=int, choices=(1, 3))


def cmd_interpolate(args: argparse.Namespace) -> int:
    """DDPM: encode two test images to step t with q, mix with lambda from 0 to 1, decode with the reverse
    chain (the paper's Fig. 8), one row per t. NCSN: the authors' interpolation sampler (rows of images
    whose Langevin noise is rotated from one draw to another)."""
    from ..data.sources import build_source
    from ..images import from_uint8, save_grid
    from ..run import load
    from ..samplers.langevin import sample_langevin_interpolation

    d = load(args.run, device=_device(args))
    out = Path(args.out or Path(args.run) / "interpolation.png")
    if d.process.kind == "vp":
        test = build_source(d.config.data, "test" if d.config.data.dataset in ("digits", "cifar10") else "train")
        a, b = (from_uint8(test[i], d.data_range) for i in args.pair)
        T = d.process.num_levels
        ts = [min(T - 1, round(f * T) - 1) for f in (0.25, 0.5, 0.75, 1.0)] if not args.t else args.t
        from ..figures import ddpm_interpolation

        grid = ddpm_interpolation(d, a, b, ts=ts, lambdas=args.lambdas, seed=args.seed)
        save_grid(out, grid.flatten(0, 1), nrow=grid.shape[1])
        print(f"rows t = {[t + 1 for t in ts]} (paper's index), columns: source, lambda 0..1, source -> {out}")
    else:
        from ..images import to_uint8
        from ..rng import ImageRNG

        x = sample_langevin_interpolation(d, args.rows, args.lambdas, ImageRNG(args.seed, args.rows, d.device),
                                          n_steps_each=d.config.sampling.n_steps_each,
                                          step_lr=d.config.sampling.step_lr, denoise=d.config.sampling.denoise)
        save_grid(out, to_uint8(x, d.data_range), nrow=args.lambdas)
        print(f"{args.rows} rows of {args.lambdas} interpolated samples -> {out}")
    return 0


def _interpolate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN")
    p.add_argument("--pair", type=int, nargs=2, default=[0, 1], help="indices of the two test images (DDPM)")
    p.add_argument("--t", type=int, nargs="*", help="code-index steps to encode to (DDPM; default T/4, T/2, 3T/4, T)")
    p.add_argument("--lambdas", type=int, default=11, help="points from one end to the other")
    p.add_argument("--rows", type=int, default=4, help="rows (NCSN)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    p.add_argument("--device")


def cmd_progressive(args: argparse.Namespace) -> int:
    """DDPM progressive generation (the predicted x0 along the chain, Fig. 6) and the rate-distortion
    curve of the progressive lossy code on a data split (Fig. 5): rate = the KL terms sent from T down
    to t, distortion = the RMSE of the x0 prediction on the [0, 255] scale; PNGs and a CSV."""
    from ..data.sources import build_source
    from ..figures import progressive, rate_distortion, write_rate_distortion
    from ..images import save_grid
    from ..run import load

    d = load(args.run, device=_device(args))
    if d.process.kind != "vp":
        raise ScorekitError("progressive generation and rate-distortion are DDPM (VP) figures")
    folder = Path(args.out or Path(args.run) / "progressive")
    frames = progressive(d, args.n, snapshots=args.snapshots, seed=args.seed)
    grid = save_grid(folder / "progressive.png", frames.flatten(0, 1), nrow=frames.shape[1])
    print(f"predicted x0 along the chain (columns t = T .. 1, then the sample) -> {grid}")
    if args.rd_images:
        source = build_source(d.config.data, args.split)
        import torch

        images = torch.stack([source[i] for i in range(min(args.rd_images, len(source)))])
        rd = rate_distortion(d, images, seed=args.seed)
        files = write_rate_distortion(folder, rd)
        print(f"rate-distortion on {rd['n']} {args.split} images: total {rd['total_bpd']:.3f} bits/dim = rate "
              f"{rd['rate'][1]:.3f} + distortion term {rd['decoder_bpd']:.3f} -> {files['png']}, {files['csv']}")
    return 0


def _progressive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN")
    p.add_argument("--n", type=int, default=8, help="samples (rows)")
    p.add_argument("--snapshots", type=int, default=10, help="x0 predictions per row")
    p.add_argument("--rd-images", type=int, default=100, help="images for the rate-distortion curve (0: skip)")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--device")


COMMANDS = [
    ("fid-ref", "reference statistics (mu, sigma) of a dataset", _fid_ref_args, cmd_fid_ref),
    ("eval", "FID / IS / KID / precision-recall of a run, with the protocol", _eval_args, cmd_eval),
    ("neighbours", "samples beside their nearest training images", _neighbours_args, cmd_neighbours),
    ("interpolate", "interpolations (DDPM Fig. 8; NCSN's interpolation sampler)", _interpolate_args, cmd_interpolate),
    ("progressive", "progressive generation and rate-distortion (DDPM)", _progressive_args, cmd_progressive),
]
