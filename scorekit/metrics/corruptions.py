"""Known corruptions of real images, in graded steps: what a judge of sample quality must rank in order.

Each takes uint8 (N, C, H, W) images and a strength and returns uint8 images of the same shape; every draw comes
from a seeded generator. Used by the judges' tests and ``benchmarks/judges.py`` (the README's table of what each
digits judge sees and misses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def blur(u8: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of std ``sigma`` pixels (5 taps, edges replicated)."""
    r = torch.arange(-2, 3, dtype=torch.float64)
    k = torch.exp(-r * r / (2 * sigma * sigma))
    k = (k / k.sum()).to(torch.float64)
    c = u8.shape[1]
    x = u8.double()
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
    return _u8(x)


def noise(u8: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """Gaussian noise of ``std`` (a fraction of the 0..255 range) added to every pixel."""
    g = torch.Generator().manual_seed(seed)
    return _u8(u8.double() + 255 * std * torch.randn(u8.shape, generator=g, dtype=torch.float64))


def thin(u8: torch.Tensor, amount: float) -> torch.Tensor:
    """Strokes thinned: each pixel moved ``amount`` (0..1) of the way to the darkest value of its 3x3 neighbourhood
    (a grey-level erosion; 1 is the erosion itself)."""
    x = u8.double()
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return _u8(x + amount * (eroded - x))


def drop_classes(u8: torch.Tensor, labels: torch.Tensor, dropped: int, seed: int = 0) -> torch.Tensor:
    """Mode dropping: as many images as given, drawn (with replacement) only from the classes >= ``dropped``."""
    keep = torch.nonzero(labels >= dropped).flatten()
    pick = torch.randint(0, len(keep), (len(u8),), generator=torch.Generator().manual_seed(seed))
    return u8[keep[pick]]


LADDERS = {  # name: (function, strengths from mild to strong)
    "blur": (blur, (0.5, 0.8, 1.2)),
    "noise": (noise, (0.03, 0.08, 0.2)),
    "thin": (thin, (0.25, 0.5, 1.0)),
    "drop classes": (drop_classes, (2, 5, 8)),
}


def corrupt(name: str, u8: torch.Tensor, strength: float, labels: torch.Tensor | None = None) -> torch.Tensor:
    fn, _ = LADDERS[name]
    return fn(u8, labels, int(strength)) if name == "drop classes" else fn(u8, strength)
