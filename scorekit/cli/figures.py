"""`scorekit neighbours`, `interpolate` and `progressive`: the papers' figures of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ScorekitError
from .args import SEED, SEED_HELP, Number, device, out_paths
from .evaluation import chosen_extractor, eval_device, extractor_args


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
    from ..evaluation.generate import generate
    from ..run import load

    denoiser = load(src, device=eval_device(args))
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
    from ..evaluation.figures import nearest_neighbours, neighbours_grid

    c, h, _ = _samples_shape(args)
    data_config(args.data, resolution=args.resolution or h, channels=args.channels or c)
    ext = None
    if args.extractor != "none":
        try:
            ext = chosen_extractor(args, (c, h, h))
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
    extractor_args(p, extra=("none",))


def cmd_interpolate(args: argparse.Namespace) -> int:
    """DDPM: encode two test images to step t with q, mix with lambda from 0 to 1, decode with the reverse
    chain (the paper's Fig. 8), one row per t. NCSN: the authors' interpolation sampler (rows of images
    whose Langevin noise is rotated from one draw to another). --out DIR receives interpolation.png;
    --out FILE.png is the figure itself."""
    from ..data.sources import build_source
    from ..evaluation.plots import labeled_grid
    from ..images import from_uint8, to_uint8
    from ..rng import ImageRNG
    from ..run import load
    from ..samplers.langevin import sample_langevin_interpolation

    d = load(args.run, device=eval_device(args))
    run = Path(args.run)
    out = out_paths(args.out, run if run.is_dir() else run.parent, "interpolation.png")
    if d.process.kind == "vp":
        from ..evaluation.figures import ddpm_interpolation

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
    from ..evaluation.figures import progressive, rate_distortion, write_rate_distortion
    from ..evaluation.plots import labeled_grid
    from ..run import load

    d = load(args.run, device=eval_device(args))
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
    ("neighbours", "samples beside their nearest training images", _neighbours_args, cmd_neighbours),
    ("interpolate", "interpolations (DDPM Fig. 8; NCSN's interpolation sampler)", _interpolate_args, cmd_interpolate),
    ("progressive", "progressive generation and rate-distortion (DDPM)", _progressive_args, cmd_progressive),
]
