"""diffusers DDPM folders (UNet2DModel + DDPMScheduler) to scorekit runs and back.

Key names map module by module (:func:`module_pairs`) between diffusers' UNet2DModel and the authors'
layout that scorekit's U-Net uses: down_blocks.i.resnets.j <-> down.i.block.j, attentions <-> attn
(linear q/k/v/out <-> 1x1 convs), up_blocks.k <-> up.(L-1-k), time_embedding.linear_1/2 <-> temb.dense.0/1,
conv_norm_out <-> norm_out.
Nothing here imports diffusers: configs are JSON, weights safetensors (or a torch file read with
weights_only=True).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoint import atomic_save_file, safe_torch_load
from ..config import Config, DataConfig, ModelConfig, ProcessConfig, SamplingConfig, TrainingConfig
from ..errors import CheckpointError
from ..images import atomic_write_bytes
from ..model.factory import build_net
from ..processes.vp import beta_schedule
from .common import load_checked, write_run
from .diffusers_config import unet2d_kwargs, uniform_norm_groups

_RESNET = (("norm1", "norm1"), ("conv1", "conv1"), ("temb_proj", "time_emb_proj"), ("norm2", "norm2"),
           ("conv2", "conv2"), ("nin_shortcut", "conv_shortcut"))
_ATTN = (("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0"))
_OLD_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}  # diffusers < 0.15


def module_pairs(cfg: Config) -> list[tuple[str, str, bool]]:
    """(scorekit module, diffusers module, is an attention projection) for every module with weights."""
    m = cfg.model
    levels, res = len(m.ch_mult), cfg.data.resolution
    attn = [res // 2**i in m.attn_resolutions for i in range(levels)]
    pairs = [("conv_in", "conv_in", False), ("temb.dense.0", "time_embedding.linear_1", False),
             ("temb.dense.1", "time_embedding.linear_2", False)]

    def resnet(ours: str, theirs: str) -> None:
        pairs.extend((f"{ours}.{a}", f"{theirs}.{b}", False) for a, b in _RESNET)

    def attention(ours: str, theirs: str) -> None:
        pairs.extend((f"{ours}.{a}", f"{theirs}.{b}", a != "norm") for a, b in _ATTN)

    for i in range(levels):
        for j in range(m.num_res_blocks):
            resnet(f"down.{i}.block.{j}", f"down_blocks.{i}.resnets.{j}")
            if attn[i]:
                attention(f"down.{i}.attn.{j}", f"down_blocks.{i}.attentions.{j}")
        if i < levels - 1:
            pairs.append((f"down.{i}.downsample.conv", f"down_blocks.{i}.downsamplers.0.conv", False))
    resnet("mid.block_1", "mid_block.resnets.0")
    attention("mid.attn_1", "mid_block.attentions.0")
    resnet("mid.block_2", "mid_block.resnets.1")
    for i in range(levels):  # scorekit's up[i] works at down[i]'s resolution; diffusers counts from the bottom
        k = levels - 1 - i
        for j in range(m.num_res_blocks + 1):
            resnet(f"up.{i}.block.{j}", f"up_blocks.{k}.resnets.{j}")
            if attn[i]:
                attention(f"up.{i}.attn.{j}", f"up_blocks.{k}.attentions.{j}")
        if i > 0:
            pairs.append((f"up.{i}.upsample.conv", f"up_blocks.{k}.upsamplers.0.conv", False))
    pairs += [("norm_out", "conv_norm_out", False), ("conv_out", "conv_out", False)]
    return pairs


def from_diffusers_keys(state: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """A UNet2DModel state dict under scorekit's (the authors') names; attention linears become 1x1 convs.
    Keys without a counterpart are kept as they are, so that the strict check reports them."""
    renamed = {}
    for key, value in state.items():
        for old, new in _OLD_ATTN.items():
            key = key.replace(f".{old}.", f".{new}.")
        renamed[key] = value
    out = {}
    for ours, theirs, linear in module_pairs(cfg):
        for suffix in ("weight", "bias"):
            value = renamed.pop(f"{theirs}.{suffix}", None)
            if value is not None:
                out[f"{ours}.{suffix}"] = value[:, :, None, None] if linear and suffix == "weight" else value
    return {**out, **renamed}


def to_diffusers_keys(state: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """The inverse of :func:`from_diffusers_keys`; the fused qkv is split into to_q, to_k and to_v."""
    state = dict(state)
    for key in [k for k in state if k.endswith(".qkv.weight") or k.endswith(".qkv.bias")]:
        prefix, suffix = key.rsplit(".qkv.", 1)
        for part, name in zip(state.pop(key).chunk(3), "qkv"):
            state[f"{prefix}.{name}.{suffix}"] = part
    out = {}
    for ours, theirs, linear in module_pairs(cfg):
        for suffix in ("weight", "bias"):
            value = state.pop(f"{ours}.{suffix}", None)
            if value is not None:
                out[f"{theirs}.{suffix}"] = value.flatten(1) if linear and suffix == "weight" else value
    if state:
        raise CheckpointError(f"no diffusers name for {', '.join(sorted(state)[:5])}")
    return out


# ----- configurations ----------------------------------------------------------------------------------------

_REQUIRED = {"norm_eps": 1e-6, "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
             "act_fn": "silu", "time_embedding_type": "positional", "resnet_time_scale_shift": "default",
             "center_input_sample": False, "class_embed_type": None, "num_class_embeds": None}
_VARIANCE = {"fixed_small": "fixedsmall", "fixed_small_log": "fixedsmall", "fixed_large": "fixedlarge",
             "fixed_large_log": "fixedlarge", "learned_range": "learned_range"}
_PREDICTION = {"epsilon": "eps", "sample": "x0"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable JSON ({e})") from None


def config_from_diffusers(unet: dict, scheduler: dict, source: str) -> Config:
    """A scorekit Config equivalent to a UNet2DModel config and a DDPMScheduler config."""
    for key, value in _REQUIRED.items():
        if key in unet and unet[key] != value:
            raise CheckpointError(f"{source}: unet {key}={unet[key]!r} has no scorekit equivalent (needs {value!r})")
    blocks = unet.get("block_out_channels", [])
    ch = blocks[0]
    if any(b % ch for b in blocks):
        raise CheckpointError(f"{source}: block_out_channels {blocks} are not multiples of the first")
    heads = unet.get("attention_head_dim")
    if heads not in (None, *blocks) and not all(h == b for h, b in zip([heads] * len(blocks), blocks)):
        raise CheckpointError(f"{source}: attention_head_dim={heads}; scorekit's U-Net has one attention head")
    res = unet["sample_size"]
    attn = [res // 2**i for i, t in enumerate(unet["down_block_types"]) if t.startswith("Attn")]
    for t in unet["down_block_types"] + unet["up_block_types"]:
        if t not in ("DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"):
            raise CheckpointError(f"{source}: block type {t} has no scorekit equivalent")
    pred = scheduler.get("prediction_type", "epsilon")
    if pred not in _PREDICTION:
        raise CheckpointError(f"{source}: prediction_type {pred!r} is not supported (epsilon or sample)")
    variance = scheduler.get("variance_type", "fixed_small")
    if variance not in _VARIANCE:
        raise CheckpointError(f"{source}: variance_type {variance!r} is not supported (fixed_small, fixed_large or "
                              "learned_range)")
    T = scheduler.get("num_train_timesteps", 1000)
    schedule = {"linear": "linear", "squaredcos_cap_v2": "cosine"}.get(scheduler.get("beta_schedule", "linear"))
    if scheduler.get("trained_betas") is not None or schedule is None:
        raise CheckpointError(f"{source}: beta_schedule {scheduler.get('beta_schedule')!r} / trained_betas are not "
                              "supported for import (linear or squaredcos_cap_v2)")
    in_ch = unet.get("in_channels", 3)
    if unet.get("out_channels", in_ch) != in_ch * (2 if variance == "learned_range" else 1):
        raise CheckpointError(f"{source}: out_channels {unet.get('out_channels')} does not fit in_channels {in_ch} "
                              f"with variance_type {variance!r}")
    groups = unet.get("norm_num_groups", 32)
    return Config(
        name=f"diffusers-{Path(source).name}", description=f"converted from the diffusers folder {source}",
        family="ddpm", data=DataConfig(dataset="folder", resolution=res, channels=in_ch),
        process=ProcessConfig(kind="vp", schedule=schedule, num_timesteps=T,
                              beta_start=float(scheduler.get("beta_start", 1e-4)),
                              beta_end=float(scheduler.get("beta_end", 0.02))),
        model=ModelConfig(arch="unet", ch=ch, ch_mult=[b // ch for b in blocks],
                          num_res_blocks=unet.get("layers_per_block", 2), attn_resolutions=attn,
                          dropout=float(unet.get("dropout", 0.0)), output=_PREDICTION[pred],
                          variance=_VARIANCE[variance], norm_groups=0 if groups == 32 else groups),
        # a learned variance is trained with the bound (improved DDPM's hybrid loss), never with L_simple alone
        training=TrainingConfig(loss="hybrid" if variance == "learned_range" else "mse"),
        sampling=SamplingConfig(clip_denoised=bool(scheduler.get("clip_sample", True))))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            return load_file(str(folder / name))
    for name in ("diffusion_pytorch_model.bin", "pytorch_model.bin"):
        if (folder / name).is_file():
            return safe_torch_load(folder / name)
    raise CheckpointError(f"{folder}: no diffusion_pytorch_model.safetensors (or .bin) found")


def import_diffusers(folder: str | Path, out: str | Path) -> Path:
    """``scorekit convert diffusers DIR``: DIR holds unet/ and scheduler/ (a DDPMPipeline folder), or is the
    unet folder itself with scheduler_config.json beside or inside it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such diffusers folder")
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (unet_dir / "config.json").is_file():
        raise CheckpointError(f"{folder}: expected unet/config.json (a diffusers DDPM folder)")
    sched_path = next((p for p in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json")
                       if p.is_file()), None)
    unet_cfg = _read_json(unet_dir / "config.json")
    if unet_cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"{unet_dir}: a {unet_cfg.get('_class_name')}, not a UNet2DModel")
    cfg = config_from_diffusers(unet_cfg, _read_json(sched_path) if sched_path else {}, str(folder))
    net = build_net(cfg)
    state = from_diffusers_keys(_weights(unet_dir), cfg)
    load_checked(net, state, str(unet_dir))
    sd = net.state_dict()
    return write_run(out, cfg, sd, sd, 0, {"format": "diffusers", "path": str(folder)})


def export_refusal(cfg: Config) -> str | None:
    """Why diffusers' UNet2DModel + DDPMScheduler + DDPMPipeline cannot express this run (None if they can),
    naming the setting."""
    m = cfg.model
    if m.consistency:
        return ("model.consistency=true: the network is a consistency function f(x, sigma) sampled in one or a few "
                "jumps, which DDPMPipeline's ancestral sampling cannot express")
    if cfg.training.loss == "pd":
        return ("training.loss=pd: a progressively distilled student samples on its own few DDIM levels; "
                "DDPMPipeline would run it on all 1000")
    if cfg.process.kind == "flow" and (m.output != "velocity" or m.precond != "none"):
        return (f"model.output={m.output}, model.precond={m.precond}: FlowMatchEulerDiscreteScheduler steps with "
                f"the velocity itself (model.output=velocity, no preconditioning)")
    if cfg.process.kind not in ("vp", "flow"):
        return f"process.kind={cfg.process.kind}: diffusers' DDPMScheduler is the VP (DDPM) process"
    if cfg.process.schedule == "learned":
        return ("process.schedule=learned: VDM's schedule is a network in the run; DDPMScheduler takes a named beta "
                "schedule")
    if m.fourier:
        return f"model.fourier={m.fourier}: UNet2DModel has no Fourier-feature input channels"
    if m.arch != "unet":
        return f"model.arch={m.arch}: UNet2DModel is the DDPM U-Net; there is no diffusers RefineNet"
    if m.num_classes:
        return f"model.num_classes={m.num_classes}: DDPMPipeline samples unconditional models only"
    if m.precond == "edm":
        return ("model.precond=edm: EDM's preconditioned network F (c_in x, ln(sigma)/4) is neither an epsilon nor "
                "a sample prediction of DDPMScheduler")
    if m.output not in ("eps", "x0", "velocity"):
        return f"model.output={m.output}: DDPMScheduler predicts epsilon or the sample (x0)"
    if m.variance == "learned":
        return ("model.variance=learned: the network's log-variance; DDPMScheduler's 'learned' takes a variance "
                "(learned_range exports)")
    if uniform_norm_groups(m.ch, m.ch_mult, m.norm_groups) is None:
        return (f"model.norm_groups=0 gives {sorted({math.gcd(32, m.ch * c) for c in m.ch_mult})} groups in "
                "different layers; UNet2DModel has one norm_num_groups (set model.norm_groups)")
    return None


def export_diffusers(denoiser, out: str | Path) -> Path:
    """``scorekit export diffusers RUN``: a folder that ``DDPMPipeline.from_pretrained`` loads; runs diffusers
    cannot express are refused (:func:`export_refusal`) before anything is written. A flow run: ``unet/`` and
    ``scheduler/`` for UNet2DModel and FlowMatchEulerDiscreteScheduler (timestep 1000 t, the velocity as the
    model output; diffusers has no unconditional flow pipeline, so no model_index.json)."""
    cfg = denoiser.config
    reason = export_refusal(cfg)
    if reason:
        raise CheckpointError(f"cannot export to diffusers: {reason}")
    out = Path(out)
    m, d = cfg.model, cfg.data
    learned = m.variance == "learned_range"
    unet = {"_class_name": "UNet2DModel", "_diffusers_version": "0.25.0",
            **unet2d_kwargs(resolution=d.resolution, in_ch=d.channels, out_ch=d.channels * (2 if learned else 1),
                            ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                            attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                            norm_groups=uniform_norm_groups(m.ch, m.ch_mult, m.norm_groups))}
    unet["block_out_channels"] = list(unet["block_out_channels"])
    unet["down_block_types"], unet["up_block_types"] = list(unet["down_block_types"]), list(unet["up_block_types"])
    p = cfg.process
    if p.kind == "flow":
        sched = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.25.0",
                 "num_train_timesteps": 1000, "shift": 1.0}
        return _write(out, denoiser, cfg, unet, sched, None)
    sched = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.25.0", "num_train_timesteps": p.num_timesteps,
             "beta_start": p.beta_start, "beta_end": p.beta_end, "clip_sample": cfg.sampling.clip_denoised,
             "variance_type": {"fixedlarge": "fixed_large", "fixedsmall": "fixed_small"}.get(m.variance, m.variance),
             "prediction_type": "epsilon" if m.output == "eps" else "sample"}
    if p.schedule in ("linear", "cosine"):
        sched["beta_schedule"] = "linear" if p.schedule == "linear" else "squaredcos_cap_v2"
    else:
        sched["beta_schedule"] = "linear"
        sched["trained_betas"] = beta_schedule(p.schedule, p.num_timesteps, p.beta_start, p.beta_end).tolist()
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": "0.25.0", "scheduler": ["diffusers", "DDPMScheduler"],
             "unet": ["diffusers", "UNet2DModel"]}
    return _write(out, denoiser, cfg, unet, sched, index)


def _write(out: Path, denoiser, cfg: Config, unet: dict, sched: dict, index: dict | None) -> Path:
    """The U-Net's weights and config, the scheduler's config and the pipeline's index (if any), each atomically."""
    # map_augment (non-leaky augmentation) sees the zero vector at sampling: it contributes nothing, so it is dropped
    state = to_diffusers_keys({k: v.detach().cpu().contiguous() for k, v in denoiser.net.state_dict().items()
                               if not k.startswith("map_augment.")}, cfg)
    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    atomic_save_file(out / "unet" / "diffusion_pytorch_model.safetensors",
                     {k: v.contiguous() for k, v in state.items()}, {"format": "pt"})
    docs = [(out / "unet" / "config.json", unet), (out / "scheduler" / "scheduler_config.json", sched)]
    for path, doc in docs + ([(out / "model_index.json", index)] if index else []):
        atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())
    return out
