"""Per-image random streams: image i draws the same noise whatever the batch it is sampled in.

Like EDM's StackedRandomGenerator, every image owns a ``torch.Generator`` whose seed is derived from
(seed, image index) with numpy's SeedSequence, so seeds of neighbouring runs do not overlap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def image_seed(seed: int, index: int) -> int:
    """A 63-bit seed for image ``index`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ImageRNG:
    """One generator per image; ``randn(*shape)`` returns a (B, *shape) tensor, row i from image i's stream.

    ``per_image=False`` draws the whole batch from one generator instead: faster for thousands of tiny
    samples (toy problems), but the draws then depend on the batch composition.
    """

    def __init__(self, seed: int = 0, indices: Sequence[int] | int = 1, device: torch.device | str = "cpu", *,
                 per_image: bool = True):
        if isinstance(indices, int):
            indices = range(indices)
        self.seed, self.indices, self.device = int(seed), list(indices), torch.device(device)
        self.per_image = per_image
        self.generators = []
        for i in self.indices if per_image else [2**32 + len(self.indices)]:  # a stream no image uses
            g = torch.Generator(device=self.device)
            g.manual_seed(image_seed(seed, i))
            self.generators.append(g)

    def __len__(self) -> int:
        return len(self.indices)

    def _draw(self, fn, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if not self.per_image:
            return fn((len(self.indices), *shape), generator=self.generators[0], device=self.device, dtype=dtype)
        return torch.stack([fn(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._draw(torch.randn, shape, dtype)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._draw(torch.rand, shape, dtype)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(*x.shape[1:], dtype=x.dtype).to(x.device)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.rand(*x.shape[1:], dtype=x.dtype).to(x.device)
