"""Images on disk: quantisation to uint8, sample grids as PNG, atomic file writes."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_uint8(x: torch.Tensor, data_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Quantise as a PNG would: round((x - lo) / (hi - lo) * 255), clipped to [0, 255]."""
    lo, hi = data_range
    return ((x.detach().float() - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8).cpu()


def from_uint8(x: torch.Tensor, data_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """uint8 -> float in the model's data range (DDPM: x / 127.5 - 1; NCSN: x / 255)."""
    lo, hi = data_range
    return x.float() / 255 * (hi - lo) + lo


def grid(images: torch.Tensor, nrow: int | None = None, padding: int = 1, pad_value: int = 255) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (H', W', C) mosaic with ``nrow`` images per row."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, np.uint8)
    arr = images.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        out[y:y + h, x:x + w] = arr[i]
    return out


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """PNG of a uint8 (H, W, C) array, enlarged ``scale`` times with nearest neighbours."""
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def display_scale(resolution: int, target: int = 64) -> int:
    """How much to enlarge small images (8x8 digits) so a grid is readable."""
    return max(1, target // resolution)


def save_grid(path: str | Path, images: torch.Tensor, nrow: int | None = None) -> Path:
    """Write a uint8 (N, C, H, W) batch as one PNG grid (small images enlarged)."""
    atomic_write_bytes(path, png_bytes(grid(images, nrow), display_scale(images.shape[-1])))
    return Path(path)


def save_pngs(folder: str | Path, images: torch.Tensor, start: int = 0) -> None:
    """One PNG per image, named by its global index (000000.png, ...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        atomic_write_bytes(folder / f"{start + i:06d}.png", png_bytes(img.permute(1, 2, 0).numpy()))


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
