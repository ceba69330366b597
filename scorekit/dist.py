"""Data-parallel processes started by ``torchrun``: rank, world size, collectives (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            x = x.clone()
            tdist.all_reduce(x)
        return x

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        return bool(self.sum(torch.tensor([1.0 if flag else 0.0], device=self.device)).item() > 0)

    def gather_cat(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate equally shaped tensors from every rank, in rank order."""
        if not self.enabled:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        tdist.all_gather(parts, x.contiguous())
        return torch.cat(parts)


def setup(device: str | None = None) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
    return Dist(rank, world, local_rank, dev)


def teardown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()
