"""The authors' checkpoints: the PyTorch port of the DDPM weights (pesser/pytorch_diffusion's ``Model``)
and ermongroup/ncsnv2's NCSN / NCSNv2 checkpoints. Both are torch pickles, read with weights_only=True."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import safe_torch_load
from ..config import load_config
from ..errors import CheckpointError
from ..model.factory import build_net
from .common import load_checked, write_run


def import_pytorch_diffusion(ckpt: str | Path, preset: str, out: str | Path) -> Path:
    """pesser/pytorch_diffusion's state dict (the authors' TF variable layout: conv_in, temb.dense.N,
    down.i.block.j, down.i.attn.j.{q,k,v,proj_out}, mid.block_1, ..., norm_out, conv_out)."""
    cfg = load_config(preset)
    if cfg.family != "ddpm":
        raise CheckpointError(f"preset {preset} is not a DDPM preset")
    state = safe_torch_load(ckpt)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{ckpt}: expected a state dict of tensors")
    net = load_checked(build_net(cfg), state, str(ckpt))
    sd = net.state_dict()
    return write_run(out, cfg, sd, sd, 0, {"format": "pytorch_diffusion", "path": str(ckpt), "preset": preset})


def import_ncsnv2(ckpt: str | Path, preset: str, out: str | Path, *, ema: bool = True) -> Path:
    """ermongroup/ncsnv2's checkpoint: [model state, optimizer state, epoch, step, EMA state] saved from
    DataParallel (keys prefixed "module."); the model's ``sigmas`` buffer is checked against the preset's
    ladder and dropped. The EMA weights become the run's EMA (used for sampling) unless ``ema`` is False."""
    cfg = load_config(preset)
    if cfg.family != "ncsn":
        raise CheckpointError(f"preset {preset} is not an NCSN preset")
    states = safe_torch_load(ckpt)
    if not isinstance(states, (list, tuple)) or not states or not isinstance(states[0], dict):
        raise CheckpointError(f"{ckpt}: expected the authors' list [model, optimizer, epoch, step, ema]")
    model = {k.removeprefix("module."): v for k, v in states[0].items()}
    sigmas = model.pop("sigmas", None)
    from ..model.factory import build_process

    if sigmas is not None:
        ours = build_process(cfg).sigmas_desc.float()
        if sigmas.shape != ours.shape or not torch.allclose(sigmas.float().cpu(), ours, rtol=1e-4):
            p = cfg.process
            raise CheckpointError(f"{ckpt}: its {len(sigmas)} noise levels ({float(sigmas[0]):g}.."
                                  f"{float(sigmas[-1]):g}) differ from preset {preset}'s ({p.sigma_begin:g}.."
                                  f"{p.sigma_end:g}, L = {p.num_levels})")
    net = load_checked(build_net(cfg), model, f"{ckpt} (model)")
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    ema_sd = None
    step = int(states[3]) if len(states) > 3 and isinstance(states[3], int) else 0
    if ema and len(states) > 4 and isinstance(states[4], dict) and states[4]:
        shadow = {k.removeprefix("module."): v for k, v in states[4].items()}
        load_checked(net, shadow, f"{ckpt} (EMA)")
        ema_sd = net.state_dict()
    return write_run(out, cfg, sd, ema_sd, step, {"format": "ncsnv2", "path": str(ckpt), "preset": preset,
                                                  "ema": ema_sd is not None})
