"""`scorekit inpaint`: fill in the hidden pixels of real images with a run's model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ScorekitError
from .args import BATCH, BATCH_HELP, NO_EMA_HELP, SEED, SEED_HELP, STEPS_OR_DEFAULT, Number, device, out_paths


def cmd_inpaint(args: argparse.Namespace) -> int:
    """Inpaint N images of DATA where --mask hides them: each row shows the masked input, --samples
    completions and the original. NCSN runs use the authors' annealed-Langevin inpainting (the known
    pixels replaced by the reference noised to each level before every Langevin step); DDPM runs replace
    the known pixels with their forward-noised copy at every reverse step, with RePaint's resampling when
    --jumps > 0 (the paper's r = jumps + 1, jump length --jump-length). --method picks either on any run.

    --mask half (the left half is kept), box (the centre square is hidden), random (half the pixels,
    seeded), or an image file whose light pixels are kept. --out DIR receives inpaint.png and
    inpainted.npz (uint8 NHWC, rows of --samples per image); --out FILE.png names the figure."""
    import torch

    from ..data.resolve import data_config
    from ..data.sources import build_source
    from ..evaluation.plots import labeled_grid
    from ..images import from_uint8, save_npz, to_uint8
    from ..rng import ImageRNG
    from ..run import load
    from ..samplers.inpaint import inpaint_mask, sample_inpaint
    from ..samplers.langevin import sample_langevin_inpaint
    from .running import _default_device, check_sampler

    d = load(args.run, device=args.device or _default_device(), ema=not args.no_ema)
    c, h, _ = d.image_shape
    data = data_config(args.data, resolution=h, channels=c)
    split = args.split if args.split != "auto" else ("test" if data.dataset in ("digits", "cifar10") else "train")
    source = build_source(data, split)
    if args.n > len(source):
        raise ScorekitError(f"--n {args.n}: {args.data} ({split}) holds only {len(source)} images")
    mask = inpaint_mask(args.mask, d.image_shape, seed=args.seed)
    method = args.method if args.method != "auto" else ("langevin" if d.config.sampling.sampler == "langevin"
                                                        else "replace")
    if method == "replace":
        check_sampler(d, "ancestral", args.steps)
    run = Path(args.run)
    out = out_paths(args.out, run if run.is_dir() else run.parent, "inpaint.png")
    reference = from_uint8(torch.stack([source[i] for i in range(args.n)]), d.data_range)
    k = args.samples
    refs = reference.repeat_interleave(k, dim=0)
    results = []
    sc = d.config.sampling
    for start in range(0, len(refs), args.batch_size):
        idx = range(start, min(len(refs), start + args.batch_size))
        rng = ImageRNG(args.seed, idx, d.device)
        batch = refs[start:idx.stop]
        if method == "langevin":
            x = sample_langevin_inpaint(d, batch, mask, rng, n_steps_each=sc.n_steps_each, step_lr=sc.step_lr,
                                        denoise=sc.denoise, progress=not args.no_progress)
        else:
            x = sample_inpaint(d, batch, mask, rng, steps=args.steps or None, jumps=args.jumps,
                               jump_length=args.jump_length, clip_denoised=sc.clip_denoised,
                               progress=not args.no_progress)
        results.append(to_uint8(x, d.data_range))
    samples = torch.cat(results).reshape(args.n, k, c, h, h)
    original = to_uint8(reference, d.data_range)
    masked = torch.where(mask.bool(), original, torch.full_like(original, 128))
    cells = torch.cat([masked[:, None], samples, original[:, None]], dim=1)
    how = "annealed Langevin" if method == "langevin" else (
        f"replacement, RePaint r = {args.jumps + 1}" if args.jumps else "replacement")
    labeled_grid(out.main, cells, title=f"Inpainting ({how}; mask: {Path(args.mask).name})",
                 col_labels=["masked input"] + [f"sample {j + 1}" for j in range(k)] + ["original"],
                 row_labels=[f"{split} {i}" for i in range(args.n)])
    save_npz(out.companion("inpainted.npz"), samples=samples.flatten(0, 1).permute(0, 2, 3, 1).numpy(),
             mask=mask[0, 0].numpy(), originals=original.permute(0, 2, 3, 1).numpy())
    print(f"{args.n} images x {k} completions ({how}) -> {out.main}, {out.companion('inpainted.npz')}")
    return 0


def _inpaint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory or checkpoint file")
    p.add_argument("--data", required=True, help="the images to inpaint: digits, a preset/config, a folder, ...")
    p.add_argument("--mask", required=True, metavar="half|box|random|PATH",
                   help="which pixels to hide (see above)")
    p.add_argument("--n", type=Number(int, 1, 1024), default=8, help="images to inpaint (rows, default 8)")
    p.add_argument("--samples", type=Number(int, 1, 64), default=4, help="completions per image (default 4)")
    p.add_argument("--split", default="auto", choices=("auto", "train", "test"),
                   help="split of DATA (auto: test where there is one)")
    p.add_argument("--method", default="auto", choices=("auto", "langevin", "replace"),
                   help="auto: langevin for runs sampled with Langevin (NCSN), replace otherwise")
    p.add_argument("--jumps", type=Number(int, 0, 100), default=0, help="RePaint resamplings per jump (replace)")
    p.add_argument("--jump-length", type=Number(int, 1, 1000), default=10, help="RePaint's jump length (replace)")
    p.add_argument("--steps", type=STEPS_OR_DEFAULT, default=0, help="respaced reverse steps (replace; 0: all)")
    p.add_argument("--seed", type=SEED, default=0, help=SEED_HELP)
    p.add_argument("--batch-size", type=BATCH, default=256, help=BATCH_HELP)
    p.add_argument("--out", metavar="DIR|FILE.png", help="default: RUN/inpaint.png")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--no-ema", action="store_true", help=NO_EMA_HELP)


COMMANDS = [("inpaint", "fill in masked pixels of real images (NCSN Langevin, DDPM replacement / RePaint)",
             _inpaint_args, cmd_inpaint)]
