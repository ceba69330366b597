"""Turn a command-line DATA argument into uint8 images: `digits`, a preset or YAML config (its data
section), a CIFAR-10 folder, an image folder or a zip."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError


def data_config(spec: str, *, resolution: int | None = None, channels: int | None = None):
    """The DataConfig DATA refers to (a path needs --resolution unless it is a CIFAR-10 folder)."""
    from ..config import ConfigError, DataConfig, load_config

    path = Path(spec)
    if spec == "digits":
        return DataConfig(dataset="digits")
    if path.exists() and path.suffix not in (".yaml", ".yml"):
        if (path / "data_batch_1").is_file() or (path / "test_batch").is_file():
            return DataConfig(dataset="cifar10", path=str(path), resolution=32, channels=3)
        if not resolution:
            raise DataError(f"{path}: give --resolution for a folder or zip of images")
        kind = "zip" if path.is_file() else "folder"
        return DataConfig(dataset=kind, path=str(path), resolution=resolution, channels=channels or 3)
    try:
        return load_config(spec).data
    except ConfigError as e:
        raise DataError(f"{spec}: not `digits`, a preset, a config or a data path ({e})") from None


def load_images(spec: str, *, split: str = "train", resolution: int | None = None, channels: int | None = None,
                max_images: int = 0, with_labels: bool = False) -> tuple:
    """uint8 (N, C, H, W) images of DATA (the first ``max_images`` if > 0) and a one-line description; with
    ``with_labels`` also their class labels (None where the data has no classes)."""
    from .sources import build_source

    cfg = data_config(spec, resolution=resolution, channels=channels)
    src = build_source(cfg, split)
    n = len(src) if max_images <= 0 else min(max_images, len(src))
    images = src.images[:n] if src.images is not None else torch.stack([src[i] for i in range(n)])
    described = f"{cfg.dataset}{' ' + cfg.path if cfg.path else ''} ({split}, {n} images)"
    if with_labels:
        return images, described, None if src.labels is None else src.labels[:n]
    return images, described
