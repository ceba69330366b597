"""`scorekit compress RUN IMAGES... --out FILE` and `scorekit decompress RUN FILE --out DIR`: lossless coding of
uint8 images with a DDPM run by bits-back ANS over its Markov chain (scorekit/codec.py)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from .args import Number, existing_file

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")  # lossless inputs only: a JPEG's pixels are already an approximation


def read_images(specs: list[str], shape: tuple[int, int, int], bits: int = 8):
    """uint8 (N, C, H, W) images and their names from PNG files, folders of PNGs (recursive, sorted), .npz files
    (an ``images`` array, (N, H, W, C) or (N, C, H, W)) and ``digits:SPLIT`` (the embedded digits). Each image
    must have the model's shape exactly: resizing or changing the mode would not be lossless. ``bits`` > 8: 16-bit
    grey PNG / TIFF files, returned as int32 integers 0..2^bits - 1."""
    import numpy as np
    import torch
    from PIL import Image

    from ..data.sources import WIDE_MODES
    from ..errors import ScorekitError

    c, h, w = shape
    mode = {1: "L", 3: "RGB"}.get(c)
    images, names = [], []
    for spec in specs:
        if spec.startswith("digits:"):
            from ..data.sources import digits

            split = spec.split(":", 1)[1]
            if split not in ("train", "test"):
                raise ScorekitError(f"{spec}: expected digits:train or digits:test")
            x = digits(split, h).images
            if tuple(x.shape[1:]) != shape:
                raise ScorekitError(f"{spec}: images of shape {tuple(x.shape[1:])}, the model codes {shape}")
            images += list(x)
            names += [f"{split}-{i:05d}.png" for i in range(len(x))]
            continue
        path = Path(spec)
        if not path.exists():
            raise ScorekitError(f"{spec}: no such file or folder")
        if path.suffix.lower() == ".npz":
            try:
                with np.load(path, allow_pickle=False) as f:
                    arr = f["images"]
            except (KeyError, ValueError, OSError):
                raise ScorekitError(f"{path}: expected an .npz file with a uint8 array 'images'") from None
            if arr.dtype != np.uint8 or arr.ndim != 4:
                raise ScorekitError(f"{path}: 'images' must be uint8 of 4 dimensions, got {arr.dtype} {arr.shape}")
            if arr.shape[-1] == c and tuple(arr.shape[1:]) == (h, w, c):
                arr = arr.transpose(0, 3, 1, 2)
            if tuple(arr.shape[1:]) != shape:
                raise ScorekitError(f"{path}: images of shape {arr.shape[1:]}, the model codes {shape} (C, H, W)")
            images += list(torch.from_numpy(np.ascontiguousarray(arr)))
            names += [f"{path.stem}-{i:05d}.png" for i in range(len(arr))]
            continue
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise ScorekitError(f"{path}: no PNG images found")
        for f in files:
            try:
                img = Image.open(f)
                img.load()
            except (OSError, SyntaxError):
                raise ScorekitError(f"{f}: not a readable image") from None
            want = f"16-bit grey ({bits}-bit data)" if bits > 8 else mode
            if (img.mode not in WIDE_MODES if bits > 8 else img.mode != mode) or img.size != (w, h):
                raise ScorekitError(f"{f}: a {img.mode} image of {img.size[0]}x{img.size[1]}; the model codes "
                                    f"{want} images of {w}x{h} (converting would not be lossless)")
            arr = np.asarray(img).astype(np.int32 if bits > 8 else np.uint8).reshape(h, w, c)
            images.append(torch.from_numpy(arr.transpose(2, 0, 1).copy()))
            names.append(str(f.relative_to(path)) if path.is_dir() else f.name)
    if not images:
        raise ScorekitError("no images to compress")
    return torch.stack(images), names


def _bar(total: int, args, what: str):
    from ..progress import progress

    bar, shown = progress(total=total, desc=what, unit="img", enabled=not args.no_progress), [0]

    def tick(done: int) -> None:
        bar.update(done - shown[0])
        shown[0] = done

    return bar, tick


def chain_choice(args, denoiser) -> dict:
    """The chain --levels / --chain ask for: ``levels`` (0: all) and, for a chosen chain, its ``timesteps``."""
    import sys

    from ..codec import CHAIN_LEVELS, chosen_chain
    from ..errors import ScorekitError

    T = denoiser.process.num_levels
    levels = min(CHAIN_LEVELS, T) if args.levels is None else args.levels
    if levels > T:
        raise ScorekitError(f"--levels {levels}: choose 1..{T} (the run's levels), or 0 for all")
    if levels in (0, T):
        return {"levels": 0, "timesteps": None}
    if args.chain == "even":
        return {"levels": levels, "timesteps": None}
    from ..progress import progress

    run, bar = Path(args.run), []

    def tick(done: int, total: int) -> None:
        if not bar:
            bar.append(progress(total=total, desc="coding chain", unit="start",
                                enabled=not getattr(args, "no_progress", False)))
        bar[0].update(1)

    found = chosen_chain(denoiser, run if run.is_dir() else None, levels, progress=tick,
                         say=lambda m: print(m, file=sys.stderr))
    if bar:
        bar[0].close()
    return {"levels": levels, "timesteps": found["timesteps"]}


def chain_args(p: argparse.ArgumentParser, default_levels: str) -> None:
    p.add_argument("--levels", type=Number(int, 0, 100_000, zero_means="all of the run's levels"), default=None,
                   help=f"code on a chain of this many of the run's T levels (default {default_levels}; 0: all T). "
                   "Time falls in proportion; the rate follows that chain's bound (scorekit bpd RUN --levels K)")
    p.add_argument("--chain", choices=("chosen", "even"), default="chosen",
                   help="which levels: chosen for the run (default: spread evenly from the start level whose bound is "
                   "lowest on training images; searched once, kept in RUN/codec_chain.json) or even (spread over "
                   "all T levels)")


def cmd_compress(args: argparse.Namespace) -> int:
    """Compress PNG / TIFF images (files, folders, .npz, or digits:test) losslessly with a DDPM or VDM run: bits-back
    coding with ANS over the run's Markov chain, pop x_t with q(x_t | x_{t-1}), push x_{t-1} with p(x_{t-1} | x_t),
    x_0 with the discretized decoder and x_T with the prior. The codelength approaches the bound of the chain coded
    on (`scorekit bpd RUN --levels K`) plus a one-off cost of initial bits and the header. By default the chain is 25
    levels chosen for the run (searched once on training images, about 20 s, kept in RUN/codec_chain.json). Coding
    runs the network on one thread, once per level and chunk of images (about 11 s for 300 digits)."""
    from ..codec import check_codable, compress
    from ..errors import ScorekitError
    from ..images import atomic_write_bytes
    from ..likelihood import pixel_bits
    from ..run import load

    if Path(args.out).is_dir():
        raise ScorekitError(f"--out {args.out}: is a folder; expected the compressed file's name")
    denoiser = load(args.run, device="cpu")
    check_codable(denoiser)
    images, names = read_images(args.images, tuple(denoiser.image_shape), pixel_bits(denoiser))
    chain = chain_choice(args, denoiser)
    bar, tick = _bar(len(images), args, "compress")
    data, rates = compress(denoiser, images, source=str(args.run), names=None if args.no_names else names,
                           batch_size=args.batch_size, progress=tick, **chain)
    bar.close()
    atomic_write_bytes(args.out, data)
    raw = images.numel()
    print(f"compressed {len(images)} images ({raw} bytes) into {args.out}: {rates['file_bytes']} bytes, "
          f"{rates['file_bits_per_dim']:.4f} bits/dim as a file ({rates['bits_per_dim']:.4f} for the chain alone, "
          f"without the {rates['initial_bits']} initial bits and the {rates['header_bytes']}-byte header)")
    if args.json:
        print(json.dumps(rates))
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    """Decompress FILE (made by `scorekit compress` with the same run) into DIR as PNG files with their original
    names, and images.npz. A different run or checkpoint, or a damaged file, is refused before anything is
    written; the decoded images are checked against the SHA-256 recorded at compression."""
    import numpy as np
    import torch
    from PIL import Image

    from ..codec import decompress, read_header
    from ..errors import ScorekitError
    from ..images import atomic_write_bytes, png_bytes
    from ..run import load

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ScorekitError(f"--out {args.out}: exists and is not a folder")
    data = Path(args.file).read_bytes()
    header, _ = read_header(data)
    names = header.get("names") or [f"{i:06d}.png" for i in range(header["count"])]
    for name in names:
        parts = Path(str(name)).parts
        if not parts or Path(str(name)).is_absolute() or ".." in parts:
            raise ScorekitError(f"{args.file}: the image name {name!r} would be written outside --out; refused")
    denoiser = load(args.run, device="cpu")
    bar, tick = _bar(header["count"], args, "decompress")
    images = decompress(denoiser, data, progress=tick)
    bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, images):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if images.dtype == torch.uint8:
            atomic_write_bytes(path, png_bytes(img.permute(1, 2, 0).numpy()))
        else:  # 16-bit grey, as PNG or TIFF after the name's suffix
            buf = io.BytesIO()
            Image.fromarray(img[0].numpy().astype(np.uint16)).save(buf, format="TIFF" if path.suffix.lower() in (
                ".tif", ".tiff") else "PNG")
            atomic_write_bytes(path, buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, images=images.numpy())
    atomic_write_bytes(out / "images.npz", buf.getvalue())
    print(f"decompressed {len(images)} images into {out} (PNG files and images.npz), checked against their SHA-256")
    return 0


def _compress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a trained DDPM run (its EMA weights code the images)")
    p.add_argument("images", metavar="IMAGES", nargs="+",
                   help="PNG files, folders of PNGs, .npz files with a uint8 'images' array, or digits:test")
    p.add_argument("--out", required=True, metavar="FILE", help="the compressed file")
    p.add_argument("--batch-size", type=Number(int, 1, 4096), default=300,
                   help="images coded together at most (300; the first chunks are smaller: scorekit/codec/coder.py)")
    chain_args(p, "25, the run's chosen chain")
    p.add_argument("--no-names", action="store_true",
                   help="leave the file names out (decompress then names the images 000000.png, 000001.png, ...)")
    p.add_argument("--json", action="store_true", help="also print the rates as JSON")


def _decompress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="the run the file was compressed with")
    p.add_argument("file", metavar="FILE", type=existing_file, help="a file made by scorekit compress")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files and images.npz")


COMMANDS = [
    ("compress", "lossless compression of images with a DDPM run (bits-back ANS at the variational bound)",
     _compress_args, cmd_compress),
    ("decompress", "decode a file of scorekit compress back into the exact images", _decompress_args,
     cmd_decompress),
]
