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
    from ..evaluation.likelihood import pixel_bits
    from ..images import atomic_write_bytes
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


def output_names(names: list[str]) -> tuple[list[str], list[str]]:
    """Where each decoded image is written under --out, and a line for each one that cannot keep its stored name:
    a second image of the same name (compared without case, as macOS and Windows do) or the name images.npz gets
    "-2", "-3", ... before its suffix; a name that is not .png / .tif / .tiff gets ".png" (the format written).
    A name that would leave --out, or that needs the same path as a file and as a folder, is refused."""
    from pathlib import PurePosixPath

    from ..errors import ScorekitError

    files, folders = {"images.npz"}, set()
    out, notes = [], []
    for name in names:
        path = PurePosixPath(str(name).replace("\\", "/"))
        if not path.parts or path.is_absolute() or ".." in path.parts or Path(str(name)).is_absolute():
            raise ScorekitError(f"the image name {name!r} would be written outside --out; refused")
        wanted = str(path)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            wanted = f"{path}.png"
            notes.append(f"{name!r} is written as PNG under {wanted!r}")
        stem, suffix = wanted[: -len(PurePosixPath(wanted).suffix)], PurePosixPath(wanted).suffix
        candidate, k = wanted, 1
        while candidate.casefold() in files or candidate.casefold() in folders:
            k += 1
            candidate = f"{stem}-{k}{suffix}"
        if candidate != wanted:
            notes.append(f"{name!r} is written as {candidate!r} (the name was taken)")
        parents = {str(p).casefold() for p in PurePosixPath(candidate).parents if str(p) != "."}
        if parents & files:
            raise ScorekitError(f"the image name {name!r} needs a folder where another image is a file; refused")
        files.add(candidate.casefold())
        folders |= parents
        out.append(candidate)
    return out, notes


def image_file(img, name: str) -> bytes:
    """A decoded (C, H, W) image as the file its name's suffix says: TIFF for .tif / .tiff, else PNG; 8-bit or
    16-bit grey as the pixels are."""
    import numpy as np
    import torch
    from PIL import Image

    from ..images import png_bytes

    tiff = Path(name).suffix.lower() in (".tif", ".tiff")
    if img.dtype == torch.uint8 and not tiff:
        return png_bytes(img.permute(1, 2, 0).numpy())
    arr = img.permute(1, 2, 0).numpy()
    arr = arr[..., 0] if arr.shape[-1] == 1 else arr
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8 if img.dtype == torch.uint8 else np.uint16)).save(
        buf, format="TIFF" if tiff else "PNG")
    return buf.getvalue()


def cmd_decompress(args: argparse.Namespace) -> int:
    """Decompress FILE (made by `scorekit compress` with the same run) into DIR with the images' original names
    (PNG, or TIFF for .tif / .tiff names), and images.npz. A different run or checkpoint, or a damaged file, is
    refused before anything is written; the decoded images are checked against the SHA-256 recorded at
    compression. Nothing already in DIR is overwritten: two images of one name are written apart (and said)."""
    import numpy as np

    from ..codec import CodecError, decompress, read_header
    from ..errors import ScorekitError
    from ..images import atomic_write_bytes
    from ..run import load

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ScorekitError(f"--out {args.out}: exists and is not a folder")
    data = Path(args.file).read_bytes()
    try:
        header, _ = read_header(data)
        names, notes = output_names(header.get("names") or [f"{i:06d}.png" for i in range(header["count"])])
    except ScorekitError as e:
        raise CodecError(f"{args.file}: {e}") from None
    for name in (*names, "images.npz"):
        if (out / name).exists():
            raise ScorekitError(f"--out {args.out}: already holds {name} (decompress never overwrites; choose an "
                                f"empty folder)")
    denoiser = load(args.run, device="cpu")
    bar, tick = _bar(header["count"], args, "decompress")
    try:
        images = decompress(denoiser, data, progress=tick)
    except CodecError as e:
        raise CodecError(f"{args.file}: {e}") from None
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, images):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, image_file(img, name))
    buf = io.BytesIO()
    np.savez(buf, images=images.numpy())
    atomic_write_bytes(out / "images.npz", buf.getvalue())
    for note in notes:
        print(f"note: {note}")
    print(f"decompressed {len(images)} images into {out} (image files and images.npz), checked against their SHA-256")
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
