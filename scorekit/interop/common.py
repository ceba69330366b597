"""Shared by the converters: strict key/shape checks with readable errors, and writing a run directory."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoint import save_checkpoint
from ..config import Config
from ..config.checks import validate
from ..errors import CheckpointError
from ..run import RunDir


def check_state_dict(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` must have exactly ``net``'s keys (the fused attention q/k/v excepted) with equal shapes;
    otherwise a CheckpointError lists what is missing, extra or of the wrong shape."""
    target = {k: v.shape for k, v in net.state_dict().items()}
    # q, k, v given separately load into the fused qkv (see nets.layers.AttnBlock)
    fused = {k[:-len("qkv.weight")] for k in target if k.endswith("qkv.weight")}
    expected = dict(target)
    for prefix in fused:
        c = target[prefix + "qkv.weight"][1]
        del expected[prefix + "qkv.weight"], expected[prefix + "qkv.bias"]
        for n in ("q", "k", "v"):
            expected[f"{prefix}{n}.weight"] = torch.Size([c, c, 1, 1])
            expected[f"{prefix}{n}.bias"] = torch.Size([c])
    given = {k: v.shape for k, v in state.items()}
    if set(given) == set(target):
        expected = target
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    wrong = sorted(f"{k} {tuple(given[k])} (expected {tuple(expected[k])})" for k in set(given) & set(expected)
                   if given[k] != expected[k])
    if missing or extra or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
            if items:
                parts.append(f"{len(items)} {label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}")
        raise CheckpointError(f"{source}: does not match the network; " + "; ".join(parts))
    return state


def load_checked(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    state = {k: v.float() if v.is_floating_point() else v for k, v in check_state_dict(net, state, source).items()}
    net.load_state_dict(state)
    return net


def write_run(out: str | Path, cfg: Config, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
              step: int, origin: dict) -> Path:
    """A run directory (config.yaml + one checkpoint) that samples and evaluates like a trained one."""
    run = RunDir(out)
    if run.latest() is not None:
        raise CheckpointError(f"{run.path}: already holds checkpoints; choose a new --out")
    validate(cfg)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    save_checkpoint(run.checkpoint_path(step), config=cfg.to_dict(), step=step, model=model, ema=ema,
                    state={"converted_from": origin})
    return run.path
