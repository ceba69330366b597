"""Images on disk: quantisation to uint8, sample grids as PNG, atomic file writes, and where a command's
outputs go (``--out``)."""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import WriteError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, which is fsynced, given
    the mode the umask gives new files (writers such as safetensors create 0600) and renamed over ``path``.
    A failure (no space left, a read-only folder) leaves ``path`` as it was and no temporary file, and raises
    :class:`~scorekit.errors.WriteError` naming the path and the cause."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(f"{path}: could not be written ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def to_uint8(x: torch.Tensor, data_range: tuple[float, float] = (-1.0, 1.0), values: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Quantise as a PNG would: round((x - lo) / (hi - lo) * 255), clipped to [0, 255]; with ``values`` (uint8: the
    data's value set) on those values instead (:func:`on_values`)."""
    if values is not None:
        return on_values(x, values, data_range)
    lo, hi = data_range
    return ((x.detach().float() - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8).cpu()


def value_edges(values: torch.Tensor, data_range: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's bins for data on ``values`` (uint8): the values' centres in ``data_range`` and the K + 1 bin
    edges, half-way between neighbouring values, the outermost at -inf / +inf (float64). With all 256 values these
    are DDPM's bins of width (hi - lo) / 255."""
    lo, hi = data_range
    centres = values.double() / 255.0 * (hi - lo) + lo
    inf = torch.tensor([math.inf], dtype=torch.float64)
    return centres, torch.cat([-inf, (centres[1:] + centres[:-1]) / 2, inf])


def on_values(x: torch.Tensor, values: torch.Tensor, data_range: tuple[float, float]) -> torch.Tensor:
    """uint8 images on the data's values: each pixel of ``x`` (in ``data_range``) becomes the value whose decoder
    bin holds it, the decoder's most likely value (its bins reach half-way to the neighbouring values)."""
    centres, edges = value_edges(values, data_range)
    index = torch.bucketize(x.detach().double().cpu(), edges[1:-1])
    return values.to(torch.uint8)[index]


def from_uint8(x: torch.Tensor, data_range: tuple[float, float] = (-1.0, 1.0), max_value: int = 255) -> torch.Tensor:
    """uint8 (or integers 0..max_value: 16-bit data) -> float in the model's data range (DDPM: x / 127.5 - 1;
    NCSN: x / 255)."""
    lo, hi = data_range
    return x.float() / max_value * (hi - lo) + lo


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


def png_bytes(array: np.ndarray, scale: int = 1, *, stored: bool = False) -> bytes:
    """PNG of a uint8 (H, W, C) array, enlarged ``scale`` times with nearest neighbours. ``stored``: deflate
    without compression, so the file's size depends on the image's shape only, never on its content."""
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", **({"compress_level": 0} if stored else {}))
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


IMAGE_OUT = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class OutPaths:
    """Where a command writes: ``main`` (its figure or data file) and the companions beside it.

    In a folder the files keep their names (grid.png, samples.npz, ...). When --out names the main file,
    the companions take its stem: ``--out fig.png`` gives fig_samples.npz, fig_images/, and a companion
    that shares the main file's default stem only changes its suffix (toy_langevin.json -> fig.json)."""

    folder: Path
    main: Path
    stem: str = ""  # set when --out names the main file
    default_stem: str = ""

    def companion(self, name: str) -> Path:
        if not self.stem:
            return self.folder / name
        rest = name[len(self.default_stem):] if self.default_stem and name.startswith(self.default_stem) else ""
        if rest[:1] in (".", "_"):
            return self.folder / f"{self.stem}{rest}"
        return self.folder / f"{self.stem}_{name}"


def out_paths(out: str | Path | None, default_folder: str | Path, main_name: str,
              suffixes: tuple[str, ...] = IMAGE_OUT) -> OutPaths:
    """``--out`` means the same in every command: a path whose extension is one of ``suffixes`` (the
    command's main product, by default an image) is that file, with the other outputs beside it under its
    stem; any other path is a folder that receives ``main_name`` and the other outputs."""
    from .errors import ScorekitError

    path = Path(out) if out else Path(default_folder)
    if path.suffix.lower() in suffixes and not path.is_dir():
        return OutPaths(path.parent, path, path.stem, Path(main_name).stem)
    if path.exists() and not path.is_dir():
        raise ScorekitError(f"--out {path}: exists and is not a folder (give a folder or a file ending in "
                            f"{' / '.join(suffixes)})")
    return OutPaths(path, path / main_name)
