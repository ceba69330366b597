"""Lossless rates on the digits test split: scorekit's bits-back codec against PNG and general-purpose compressors.

    python benchmarks/codec_rates.py [--run RUN ...] [--chains chosen:25 even:50 all] [--n 300] [--out results.json]

Every coder sees exactly the same uint8 images (the digits as the data loader stores them: 8x8, 17 grey levels
out of 256). General-purpose compressors get the raw bytes (N x 64); PNG, WebP lossless and JPEG XL lossless
(with imagecodecs installed) get one mosaic of all the images, and PNG also one file per image; the pixel values'
own entropy is the empirical entropy of their histogram. With --run, each run's variational bound on each chain and
the codec's measured rate on the same images (with the compression and decompression times, one thread, and the
one-off search of the run's chosen chain) join the table."""

from __future__ import annotations

import argparse
import bz2
import io
import json
import lzma
import math
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def general_purpose(u8: np.ndarray) -> dict[str, float]:
    """Bits per dimension of each general-purpose coder on the raw bytes, PNG and the histogram entropy."""
    raw, dims = u8.tobytes(), u8.size
    out = {"zlib -9": len(zlib.compress(raw, 9)), "bz2 -9": len(bz2.compress(raw, 9)),
           "lzma (preset 9e)": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))}
    n, _, h, w = u8.shape
    cols = math.ceil(math.sqrt(n))
    mosaic = np.zeros((math.ceil(n / cols) * h, cols * w), np.uint8)
    for i, img in enumerate(u8[:, 0]):
        r, c = divmod(i, cols)
        mosaic[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    out["PNG, one mosaic"] = len(_png(mosaic))  # (its few blank padding cells are charged to the images)
    out["PNG, one file per image"] = sum(len(_png(img)) for img in u8[:, 0])
    out["WebP lossless, one mosaic"] = len(_pil(mosaic, "WEBP", lossless=True, quality=100, method=6))
    try:  # JPEG XL lossless through imagecodecs (optional: pip install imagecodecs)
        import imagecodecs

        out["JPEG XL lossless (effort 9), one mosaic"] = len(imagecodecs.jpegxl_encode(mosaic, lossless=True,
                                                                                       effort=9))
    except (ImportError, AttributeError, RuntimeError) as e:
        print(f"JPEG XL: not measured ({type(e).__name__}: {e}; pip install imagecodecs)")
    rates = {k: 8 * v / dims for k, v in out.items()}
    counts = np.bincount(u8.ravel(), minlength=256) / dims
    nz = counts[counts > 0]
    rates["pixel-value entropy (no coder)"] = float(-(nz * np.log2(nz)).sum())
    return rates


def _pil(a: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **options)
    return buf.getvalue()


def _png(a: np.ndarray) -> bytes:
    return _pil(a, "PNG", optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs="+", default=[],
                    help="trained DDPM / VDM digits runs (each adds its bounds and codec rates)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--chains", nargs="+", default=["chosen:25"],
                    help="chains to code on, one row each: chosen:K (compress's default, K = 25: the run's chosen "
                    "chain, searched on training images), even:K (K levels spread over all T) or all")
    ap.add_argument("--out", default="benchmarks/results/codec_rates.json")
    args = ap.parse_args()
    import torch

    from scorekit.data import digits

    images = digits("test").images[:args.n]
    rows = general_purpose(images.numpy())
    payload: dict = {"benchmark": "codec_rates", "n": len(images), "rates_bits_per_dim": rows, "codec": []}
    for run in args.run:
        from scorekit.codec import chosen_chain, coding_chain, compress, decompress
        from scorekit.evaluation.bpd import bits_per_dim
        from scorekit.run import load

        d, name = load(run, device="cpu"), Path(run).name
        for spec in args.chains:
            kind, _, k = spec.partition(":")
            t0 = time.perf_counter()
            timesteps = chosen_chain(d, run, int(k))["timesteps"] if kind == "chosen" else None
            search = time.perf_counter() - t0
            levels = 0 if kind == "all" else int(k)
            chain = coding_chain(d, levels, timesteps)
            bound = bits_per_dim(chain, split="test", n=args.n)
            t0 = time.perf_counter()
            data, rates = compress(d, images, levels=levels, timesteps=timesteps)
            t1 = time.perf_counter()
            exact = torch.equal(decompress(d, data), images)
            t2 = time.perf_counter()
            T = chain.process.num_levels
            label = f"{name}, {kind} chain of {T} levels"
            rows[f"scorekit codec ({label}): the whole file"] = rates["file_bits_per_dim"]
            rows[f"scorekit codec ({label}): the chain alone"] = rates["bits_per_dim"]
            rows[f"variational bound ({label})"] = bound["bpd"]
            payload["codec"].append({"run": run, "chain": spec, "levels": T, "timesteps": timesteps, "bound": bound,
                                     "rates": rates, "exact": exact, "search_seconds": round(search, 1),
                                     "compress_seconds": round(t1 - t0, 1), "decompress_seconds": round(t2 - t1, 1)})
    print(f"| coder | bits/dim ({len(images)} test digits) |\n| --- | --- |")
    for k, v in sorted(rows.items(), key=lambda kv: kv[1]):
        print(f"| {k} | {v:.3f} |")
    for c in payload.get("codec", []):
        print(f"{c['run']} {c['chain']}: {c['rates']['bits_per_dim'] / c['bound']['bpd'] - 1:+.2%} against that "
              f"chain's bound; whole file {c['rates']['file_bits_per_dim']:.3f} bits/dim; compress "
              f"{c['compress_seconds']} s, decompress {c['decompress_seconds']} s (chain search "
              f"{c['search_seconds']} s, once per run), exact round trip: {c['exact']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
