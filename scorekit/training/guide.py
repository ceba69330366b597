"""The run's own autoguidance guide (``training.guide_at``; ``scorekit sample RUN --guide self``): the EMA weights
at a fraction of the steps, a weaker version of the final model that costs no training (Karras et al. 2024 guide
with a model trained for less time; a checkpoint without optimizer state, RUN/checkpoints/guide.safetensors)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import save_checkpoint
from ..config import Config
from ..run import RunDir


def guide_step(cfg: Config) -> int:
    """The step at which a run keeps its guide: training.guide_at x training.steps, at least 1 (0: none)."""
    tc = cfg.training
    return max(1, round(tc.guide_at * tc.steps)) if tc.guide_at else 0


def keep_guide(run: RunDir, cfg: Config, step: int, weights: dict[str, torch.Tensor]) -> Path:
    """Write the guide's weights (atomically; the same file after an interrupted, resumed run)."""
    return save_checkpoint(run.guide_path, config=cfg.to_dict(), step=step, model=weights,
                           state={"kept": "the run's autoguidance guide (training.guide_at)"})
