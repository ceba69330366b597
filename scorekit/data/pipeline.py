"""From a dataset to training batches: a deterministic, resumable order and on-device preprocessing.

The index of the j-th example of global step k depends only on (seed, k, j): epochs are permutations
seeded by (seed, epoch). Resuming at step k therefore continues the same stream, and data-parallel
ranks take disjoint slices of the same global batch whatever their number.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..images import from_uint8
from .sources import ImageSource


class EpochOrder:
    """Positions 0, 1, 2, ... of an endless sequence of seeded permutations of ``n`` items."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.clear()
            rs = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, 7])))
            self._cache[epoch] = rs.permutation(self.n)
        return self._cache[epoch]

    def indices(self, start: int, count: int) -> np.ndarray:
        pos = np.arange(start, start + count)
        epochs, within = np.divmod(pos, self.n)
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(epochs):
            mask = epochs == e
            out[mask] = self._perm(int(e))[within[mask]]
        return out


def micro_batch_slice(global_batch: int, world: int, rank: int, accum: int, micro: int) -> slice:
    """The part of a global batch that process ``rank`` uses in micro-batch ``micro``."""
    per = global_batch // (world * accum)
    start = (micro * world + rank) * per
    return slice(start, start + per)


class BatchStream:
    """Yields (uint8 micro-batch, class labels or None) for steps ``start_step``.. in order; resumable by
    construction."""

    def __init__(self, source: ImageSource, *, seed: int, global_batch: int, world: int = 1, rank: int = 0,
                 accum: int = 1, num_workers: int = 0, device: torch.device | str = "cpu"):
        if global_batch % (world * accum):
            raise ValueError(f"global batch {global_batch} is not divisible by {world} processes x {accum} "
                             "accumulation steps")
        self.source, self.order = source, EpochOrder(len(source), seed)
        self.global_batch, self.world, self.rank, self.accum = global_batch, world, rank, accum
        self.num_workers, self.device = num_workers, torch.device(device)
        self.images = source.images.to(self.device) if source.images is not None else None
        self.labels = source.labels.to(self.device) if source.labels is not None else None

    def _plan(self, start_step: int) -> Iterator[np.ndarray]:
        step = start_step
        while True:
            idx = self.order.indices(step * self.global_batch, self.global_batch)
            for micro in range(self.accum):
                yield idx[micro_batch_slice(self.global_batch, self.world, self.rank, self.accum, micro)]
            step += 1

    def _labels(self, idx: np.ndarray) -> torch.Tensor | None:
        return None if self.labels is None else self.labels[torch.from_numpy(idx).to(self.device)]

    def batches(self, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        if self.images is not None:  # in memory (digits, CIFAR-10): gather on the device
            for idx in self._plan(start_step):
                yield self.images[torch.from_numpy(idx).to(self.device)], self._labels(idx)
            return
        loader = torch.utils.data.DataLoader(
            self.source, batch_sampler=_Plan(self._plan, start_step), num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None)
        for batch, idx in zip(loader, self._plan(start_step)):  # the same plan: labels of the same images
            yield batch.to(self.device, non_blocking=True), self._labels(idx)


class _Plan(torch.utils.data.Sampler):
    def __init__(self, plan, start_step: int):
        self.plan, self.start_step = plan, start_step

    def __iter__(self):
        for idx in self.plan(self.start_step):
            yield idx.tolist()


def preprocess(u8: torch.Tensor, data_range: tuple[float, float], *, flip: torch.Tensor | None = None,
               dequant_noise: torch.Tensor | None = None, max_value: int = 255) -> torch.Tensor:
    """uint8 (or integers 0..max_value: b-bit data) -> model range; optional horizontal flips (a bool per image) and
    uniform dequantization (NCSN v1: x = (u8 + U[0, 1)) / 256 on [0, 1])."""
    if dequant_noise is not None:
        lo, hi = data_range
        x = (u8.float() + dequant_noise) / (max_value + 1.0) * (hi - lo) + lo
    else:
        x = from_uint8(u8, data_range, max_value)
    if flip is not None:
        x = torch.where(flip.reshape(-1, 1, 1, 1), x.flip(-1), x)
    return x
