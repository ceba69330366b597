"""Image datasets as uint8 (C, H, W) tensors: digits, CIFAR-10 batches, folders, zips, LSUN lmdb, CelebA.

Nothing is downloaded: every source reads local files (the digits ship inside scikit-learn). Problems
raise :class:`~scorekit.errors.DataError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I")  # PIL's modes of 16-bit grey PNG / TIFF
DIGITS_TEST_SIZE = 300  # fixed split: 1497 training and 300 test digits


class ImageSource(torch.utils.data.Dataset):
    """A dataset of uint8 images; ``images`` holds them all when they fit in memory."""

    name = "images"
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # class indices, where the data has classes
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def detect_values(data: ImageSource) -> list[int]:
    """The uint8 values the training images take ([] when all 256 occur): data.detect_values."""
    if data.images is not None:
        counts = torch.bincount(data.images.flatten().long(), minlength=256)
    else:
        counts = torch.zeros(256, dtype=torch.long)
        for i in range(len(data)):
            counts += torch.bincount(data[i].flatten().long(), minlength=256)
    values = counts.nonzero().flatten().tolist()
    return values if len(values) < 256 else []


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class InMemory(ImageSource):
    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor | None = None,
                 class_names: list[str] | None = None):
        self.name, self.images, self.labels, self.class_names = name, images, labels, class_names


def prepare(img: Image.Image, resolution: int, channels: int, centre_crop: int = 0, bits: int = 8) -> torch.Tensor:
    """Optional fixed centre crop (CelebA: 140), centre crop to a square, resize, to uint8 (C, H, W); ``bits`` > 8:
    a 16-bit grey image, kept as int32 integers 0..2^bits - 1 (resized, if it must be, in 32-bit integers)."""
    if bits > 8:
        if img.mode not in WIDE_MODES:
            raise ValueError(f"data.bits={bits} needs 16-bit grey images, got a {img.mode} image")
        img = img.convert("I")
    else:
        img = img.convert("L" if channels == 1 else "RGB")
    if centre_crop:
        img = _centre_crop(img, centre_crop)
    img = _centre_crop(img, min(img.size))
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.BILINEAR)
    arr = np.asarray(img).clip(0, 2**bits - 1).astype(np.int32) if bits > 8 else np.asarray(img, dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _centre_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode(data: bytes | Path, label: str, resolution: int, channels: int, centre_crop: int = 0,
           bits: int = 8) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            return prepare(img, resolution, channels, centre_crop, bits)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{label}: cannot read the image ({e.__class__.__name__}: {e})") from None


# ----- scikit-learn digits -------------------------------------------------------------------------------

def digits(split: str = "train", resolution: int = 8) -> InMemory:
    """scikit-learn's bundled 8x8 digits (values 0..16 -> uint8 round(v * 255 / 16)); a fixed split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.RandomState(0).permutation(len(images))
    idx = order[DIGITS_TEST_SIZE:] if split == "train" else order[:DIGITS_TEST_SIZE]
    if split not in ("train", "test"):
        raise DataError(f"digits: unknown split {split!r}; choose train or test")
    x = torch.from_numpy(images[idx])[:, None]
    if resolution != 8:
        x = torch.nn.functional.interpolate(x.float(), size=resolution, mode="nearest").round().to(torch.uint8)
    return InMemory("digits", x, torch.from_numpy(d.target[idx]), [str(i) for i in range(10)])


# ----- CIFAR-10 python batches ---------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and dicts only: a CIFAR batch cannot run code when loaded."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    return data, labels


def cifar10(path: str | Path, split: str = "train") -> InMemory:
    """CIFAR-10 from the python batches (the folder ``cifar-10-batches-py``)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: CIFAR-10 folder not found (expected the extracted cifar-10-batches-py)")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if split not in ("train", "test"):
        raise DataError(f"cifar10: unknown split {split!r}; choose train or test")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataError(f"{root / missing[0]}: missing CIFAR-10 batch file")
    parts = [_read_cifar_batch(root / n) for n in names]
    return InMemory("cifar10", torch.from_numpy(np.concatenate([p[0] for p in parts])),
                    torch.from_numpy(np.concatenate([p[1] for p in parts])), CIFAR10_CLASSES)


# ----- folders, zips, LSUN lmdb --------------------------------------------------------------------------

class Files(ImageSource):
    """Images decoded on access from a folder (recursive) or a zip archive."""

    def __init__(self, path: str | Path, resolution: int, channels: int, centre_crop: int = 0, bits: int = 8):
        self.path, self.resolution, self.channels, self.centre_crop = Path(path), resolution, channels, centre_crop
        self.bits = bits
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file or folder")
        self.zip = self.path.is_file()
        if self.zip:
            try:
                with zipfile.ZipFile(self.path) as zf:
                    names = zf.namelist()
            except zipfile.BadZipFile:
                raise DataError(f"{self.path}: not a zip archive") from None
            self.members = sorted(n for n in names if n.lower().endswith(IMAGE_SUFFIXES))
        else:
            self.members = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*")
                                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.members:
            raise DataError(f"{self.path}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        self.name = self.path.name
        # classes are the sub-folders (sorted names), when every image is inside one
        parts = [m.replace("\\", "/").split("/") for m in self.members]
        if all(len(p) > 1 for p in parts):
            self.class_names = sorted({p[0] for p in parts})
            index = {c: i for i, c in enumerate(self.class_names)}
            self.labels = torch.tensor([index[p[0]] for p in parts])
        self._zf = None

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> torch.Tensor:
        name = self.members[i]
        if self.zip:
            if self._zf is None:  # opened lazily, once per worker process
                self._zf = zipfile.ZipFile(self.path)
            return decode(self._zf.read(name), f"{self.path}:{name}", self.resolution, self.channels,
                          self.centre_crop, self.bits)
        return decode(self.path / name, str(self.path / name), self.resolution, self.channels, self.centre_crop,
                      self.bits)

    def __getstate__(self):
        return {**self.__dict__, "_zf": None}


class LSUN(ImageSource):
    """An LSUN category in its lmdb form (keys -> encoded images); needs the ``lmdb`` extra."""

    def __init__(self, path: str | Path, resolution: int, channels: int):
        try:
            import lmdb  # noqa: F401
        except ImportError:
            raise DataError("reading LSUN needs the lmdb extra: pip install 'scorekit[lmdb]'") from None
        self.path, self.resolution, self.channels = Path(path), resolution, channels
        if not self.path.exists():
            raise DataError(f"{self.path}: no such LSUN lmdb folder")
        env = self._open()
        with env.begin() as txn:
            self.keys = [k for k, _ in txn.cursor()]
        env.close()
        if not self.keys:
            raise DataError(f"{self.path}: the lmdb holds no images")
        self.name, self._env = self.path.name, None

    def _open(self):
        import lmdb

        try:
            return lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, meminit=False,
                             subdir=self.path.is_dir())
        except lmdb.Error as e:
            raise DataError(f"{self.path}: cannot open the lmdb ({e})") from None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._env is None:
            self._env = self._open()
        with self._env.begin() as txn:
            data = txn.get(self.keys[i])
        return decode(bytes(data), f"{self.path}[{self.keys[i].decode(errors='replace')}]", self.resolution,
                      self.channels)

    def __getstate__(self):
        return {**self.__dict__, "_env": None}


class Head(ImageSource):
    """The first ``n`` images of a source (``data.max_images``: a small training set, e.g. for augmentation)."""

    def __init__(self, source: ImageSource, n: int):
        self.source, self.n = source, n
        self.name, self.class_names = f"{source.name} (first {n})", source.class_names
        self.images = None if source.images is None else source.images[:n]
        self.labels = None if source.labels is None else source.labels[:n]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.source[i % self.n]


def build_source(cfg, split: str = "train") -> ImageSource:
    """The dataset of a :class:`~scorekit.config.DataConfig` (only digits and CIFAR-10 have a test split);
    ``data.max_images`` keeps the first images of the training split."""
    source = _build_source(cfg, split)
    if split == "train" and 0 < cfg.max_images < len(source):
        return Head(source, cfg.max_images)
    return source


def _build_source(cfg, split: str) -> ImageSource:
    bits = getattr(cfg, "bits", 8)
    if bits > 8 and cfg.dataset not in ("folder", "zip"):
        raise DataError(f"data.bits={bits}: {bits}-bit images come from a folder or zip of 16-bit PNG / TIFF files "
                        f"(data.dataset=folder or zip), not {cfg.dataset}")
    if cfg.dataset == "digits":
        return digits(split, cfg.resolution)
    if not cfg.path:
        raise DataError(f"data.path: the {cfg.dataset} dataset needs a local path (set data.path=...)")
    if cfg.dataset == "cifar10":
        return cifar10(cfg.path, split)
    if split != "train":
        raise DataError(f"{cfg.dataset}: has no {split!r} split; pass a separate folder with --data")
    if cfg.dataset == "lsun":
        return LSUN(cfg.path, cfg.resolution, cfg.channels)
    crop = cfg.centre_crop or (140 if cfg.dataset == "celeba" else 0)
    return Files(cfg.path, cfg.resolution, cfg.channels, crop, bits)
