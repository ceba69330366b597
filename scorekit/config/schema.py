"""Typed configuration: dataclasses, YAML presets shipped with the package, ``a.b=value`` overrides.

A preset is one :class:`Config` written out as YAML. Unknown keys, wrong types and impossible values are
rejected with a :class:`ConfigError` that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .checks import validate
from .choices import BOUND_LOSSES, CHOICES, CONSISTENCY_LOSSES, FEWSTEP_LOSSES, ConfigError

__all__ = ["BOUND_LOSSES", "CHOICES", "CONSISTENCY_LOSSES", "FEWSTEP_LOSSES", "ConfigError", "Config", "load_config",
           "from_dict"]




@dataclass
class DataConfig:
    dataset: str = "digits"  # digits (bundled with scikit-learn) | cifar10 | folder | zip | lsun | celeba
    path: str = ""  # local file or folder (every dataset but digits)
    resolution: int = 8  # images are resized / cropped to resolution x resolution
    channels: int = 1  # 1 (grey) or 3 (RGB)
    random_flip: bool = False  # random horizontal flips in training
    centre_crop: int = 0  # centre crop to this size before resizing (CelebA: 140); 0 = none
    dequantize: str = "none"  # uniform dequantization (NCSN v1) or none
    augment: float = 0.0  # non-leaky augmentation (EDM): probability of each geometric transform; 0 = none
    max_images: int = 0  # train on the first this many training images; 0 = all
    # the data's quantisation: the uint8 values its pixels take (the decoder's bins, the codec's symbols; [] = all
    # 256); detect_values=true fills it from the training images when a run starts (the digits: 17 values)
    values: list[int] = field(default_factory=list)
    detect_values: bool = False
    # the files' bit depth: 8 (uint8); 1..7: 2^bits grey levels spread evenly over 0..255, round(i 255 / (2^bits - 1));
    # 9..16: integers 0..2^bits - 1 (16-bit PNG / TIFF; the bound and the codec, grey images)
    bits: int = 8
    num_workers: int = 0  # data-loader worker processes


@dataclass
class ProcessConfig:
    kind: str = "vp"  # vp (DDPM) | ve (NCSN) | subvp (Song et al. 2021; the vp keys) | flow (x = (1-t) x0 + t eps)
    schedule: str = "linear"  # vp: beta schedule, or learned (VDM's gamma(t), trained with training.loss=vdm)
    num_timesteps: int = 1000  # vp: T; flow: N levels t_i = (i + 1) / (N + 1)
    beta_start: float = 1e-4  # vp
    beta_end: float = 0.02  # vp
    gamma_min: float = -13.3  # vp, schedule learned: gamma(0) = -log SNR at the least noise, initially (VDM)
    gamma_max: float = 5.0  # vp, schedule learned: gamma(1), initially
    sigma_begin: float = 50.0  # ve: sigma_1, the largest
    sigma_end: float = 0.01  # ve: sigma_L, the smallest
    num_levels: int = 232  # ve: L
    ladder: str = "geometric"  # ve: geometric | uniform


@dataclass
class ModelConfig:
    arch: str = "unet"  # unet (DDPM) | ncsn (v1 CondRefineNetDilated) | ncsnv2 | ncsnv2_deeper | ncsnv2_deepest
    ch: int = 128  # unet: base channels
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # unet: channel multiplier per level
    num_res_blocks: int = 2  # unet
    attn_resolutions: list[int] = field(default_factory=lambda: [16])  # unet
    dropout: float = 0.1  # unet
    ngf: int = 128  # ncsn*: base channels
    output: str = "eps"  # what the network outputs: eps | x0 | mean | score | sigma_score | v | velocity (eps - x0)
    variance: str = "fixedlarge"  # reverse-process variance: fixedlarge | fixedsmall | learned_range | learned
    num_classes: int = 0  # class-conditional with this many classes (0 = unconditional)
    precond: str = "none"  # edm: D = c_skip x + c_out F(c_in x; ln(sigma)/4) (EDM Table 1); none: the output's own
    sigma_data: float = 0.5  # edm: the data's standard deviation in the model's range
    norm_groups: int = 0  # unet: GroupNorm groups of every layer; 0 = 32, or gcd(32, channels) where 32 doesn't divide
    fourier: list[int] = field(default_factory=list)  # unet: also feed sin/cos(2^n pi x), n in this list (VDM)
    consistency: bool = False  # a consistency function f(x, sigma) (Song et al. 2023) with f(x, sigma_min) = x
    mean_flow: bool = False  # unet: a second time input t - r, MeanFlow's average velocity u(z, r, t)


@dataclass
class TrainingConfig:
    steps: int = 800_000
    batch_size: int = 128  # global batch (split over processes)
    lr: float = 2e-4
    warmup: int = 5000  # linear learning-rate warmup steps
    grad_clip: float = 1.0  # global-norm clipping; 0 disables
    ema_decay: float = 0.9999  # 0 disables
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    loss: str = "mse"  # mse (L_simple) | kl = vlb | hybrid | dsm (NCSN) | edm | likelihood | vdm | cd | ect | ict | pd
    # | fm (conditional flow matching, process.kind=flow) | reflow (fm on a teacher's (noise, endpoint) pairs)
    # | meanflow (MeanFlow's identity, a flow with model.mean_flow)
    vdm_steps: int = 0  # vdm: 0 = VDM's continuous-time bound; T' > 0 = its discrete-time bound on T' steps
    t_sampling: str = "uniform"  # uniform | importance (vlb: improved DDPM's; likelihood: uniform in log sigma)
    # | logit_normal (fm, meanflow: SD3's logit(t) ~ N(p_mean, p_std^2)) | mode (fm: SD3's heavy-tailed, mode_scale)
    # | u_shaped (fm / reflow: 2-rectified flow++'s p(t) ~ cosh(4 t - 2), more weight at both ends)
    anneal_power: float = 2.0  # dsm: lambda(sigma) = sigma^anneal_power
    grad_accum: int = 1  # micro-batches per optimizer step
    label_dropout: float = 0.0  # classifier-free guidance: probability that a label is replaced by "no class"
    p_mean: float = -1.2  # edm loss: ln(sigma) ~ N(p_mean, p_std^2); fm, logit_normal: logit(t) = ln(sigma), SD3's m
    p_std: float = 1.2  # fm, logit_normal: SD3's s
    meanflow_ratio: float = 0.25  # meanflow: the fraction of (t, r) with r != t (the rest train u(z, t, t) = v)
    adaptive_p: float = 1.0  # meanflow: the adaptive weight's power p in 1 / (||delta||^2 + c)^p (0: plain squares)
    mode_scale: float = 1.29  # fm, t_sampling=mode: SD3's s in t = 1 - u - s (cos^2(pi u / 2) - 1 + u)
    snapshot_every: int = 0  # post-hoc EMA (EDM2): save the power-function EMAs every this many steps; 0 = off
    phema_sigma_rel: list[float] = field(default_factory=lambda: [0.05, 0.10])  # their relative widths
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16
    compile: bool = False  # torch.compile the network (CUDA)
    channels_last: bool = True  # channels-last memory format (faster convolutions on GPUs)
    seed: int = 0
    log_every: int = 100
    test_every: int = 500  # loss on fixed held-out (test split) and held-in batches every N steps; 0 = never
    test_batch: int = 256  # images in each of those fixed batches
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2
    sample_every: int = 0  # write a sample grid every N steps; 0 = only at the end
    guide_at: float = 0.0  # autoguidance (--guide self): keep the EMA weights at this fraction of the steps as
    # RUN/checkpoints/guide.safetensors, the run's own weaker guide; 0 = keep none
    max_nonfinite: int = 10  # stop after this many non-finite losses/gradients in a row


@dataclass
class SamplingConfig:
    sampler: str = "ancestral"
    steps: int = 0  # 0 = the sampler's default (all levels for ancestral / langevin)
    schedule: str = "auto"  # auto (searched for the run, else the sampler's) | karras | logsnr | uniform | quad
    clip_denoised: bool = True
    n_steps_each: int = 5  # langevin: T steps per noise level
    step_lr: float = 6.2e-6  # langevin: eps of alpha_i = eps sigma_i^2 / sigma_L^2
    denoise: bool = True  # langevin: final denoising step
    guidance: float = 1.0  # classifier-free guidance scale for --class (1 = the conditional model)
    num_samples: int = 64  # images written by `scorekit sample` and at the end of training
    batch_size: int = 256
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast of the network on CUDA) | auto (bf16 on CUDA)
    compile: bool = False  # torch.compile(mode="reduce-overhead") the network (CUDA graphs), static batch shapes


@dataclass
class FewStepConfig:
    """Consistency models and distillation (``scorekit distill``, ``training.loss`` cd / ect / ict / pd)."""

    teacher: str = ""  # distillation: the teacher's weights and config (RUN/teacher.safetensors, copied at the start)
    guidance: float = 1.0  # a class-conditional teacher's classifier-free guidance scale, fixed during distillation
    sigma_min: float = 0.0  # the consistency boundary and the smallest level; 0 = the model's own
    sigma_max: float = 0.0  # the largest level; 0 = the model's own, capped at 20 (model.factory.fewstep_sigma_max)
    rho: float = 7.0  # Karras spacing of the discrete levels
    levels: int = 18  # cd: N, adjacent levels of an N-level Karras grid (Song et al. 2023: 18 on CIFAR-10)
    target_ema: float = 0.95  # cd: mu, the decay of the target network's EMA (Song et al. 2023, Table 3)
    huber_c: float = 0.0  # pseudo-Huber d = sqrt(||x - y||^2 + c^2) - c over the whole image; 0 = 0.00054 sqrt(dim)
    p_mean: float = -1.1  # ect / ict: ln(sigma) ~ N(p_mean, p_std^2)
    p_std: float = 2.0
    ect_q: float = 2.0  # ect: t - r shrinks by this factor at every stage
    stages: int = 6  # ect: stages over training.steps (dt -> 0)
    ict_s0: int = 10  # ict: N(k) = min(s0 2^floor(k / K'), s1) + 1 levels
    ict_s1: int = 1280
    pd_steps: int = 64  # pd: the teacher's deterministic steps at the first round (halved every round)
    pd_final: int = 2  # pd: the student's steps after the last round
    pairs: int = 20000  # reflow: (noise, ODE endpoint) pairs the teacher draws (kept in RUN/pairs/)
    pair_seed: int = 7  # reflow: pair i's noise comes from the generator (pair_seed, i)
    reflow_distance: str = "l2"  # reflow: l2 (Liu et al.) | pseudo_huber (2-rectified flow++, c = huber_c)
    pair_sampler: str = ""  # reflow: "NAME STEPS [SCHEDULE]" of the teacher's pairs (an ODE sampler); "" = automatic
    init: str = "auto"  # reflow: the student's start: teacher (its weights) | scratch | auto (teacher on [-1, 1] data)


@dataclass
class EvalConfig:
    bpd_images: int = 0  # test images for bits/dim at the end of training; 0 = skip
    proxy_samples: int = 0  # samples for the digits proxy FD / IS at the end of training; 0 = skip


@dataclass
class Config:
    name: str = "custom"
    description: str = ""
    family: str = "ddpm"  # ddpm (VP process, data in [-1, 1]) | ncsn (VE process, data in [0, 1]) | flow (the
    # straight path, data in [-1, 1]); any network
    data: DataConfig = field(default_factory=DataConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fewstep: FewStepConfig = field(default_factory=FewStepConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----- reading and validation ---------------------------------------------------------------------------

def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)[:1]
        return [_check_type(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_type(key, value, option)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} has the wrong type")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    raise ConfigError(f"{key}: unsupported type {tp}")


def unknown_key(prefix: str, key: str, valid) -> str:
    """The message for an unknown configuration key: the closest valid one first, then all of them."""
    guess = difflib.get_close_matches(str(key), [str(k) for k in valid], n=1, cutoff=0.6)
    hint = f"did you mean {prefix}{guess[0]}? " if guess else ""
    return f"unknown key {prefix}{key}; {hint}valid keys here: {', '.join(valid)}"


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(unknown_key(prefix, unknown[0], fields))
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(prefix + name, value, tp)
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Config:
    return validate(_build(Config, data))


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a config dict (unknown keys are caught by :func:`from_dict`)."""
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                sections = [k for k, v in node.items() if isinstance(v, dict)]
                guess = difflib.get_close_matches(part, sections, n=1)
                hint = f"did you mean {guess[0]!r}? " if guess else ""
                raise ConfigError(f"unknown key {key}; {part!r} is not a section ({hint}sections: "
                                  f"{', '.join(sections)})")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(unknown_key(key[:len(key) - len(parts[-1])], parts[-1], node))
        node[parts[-1]] = value
    return data


# ----- presets ------------------------------------------------------------------------------------------

def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("scorekit.config.presets").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path: Path | Any, label: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping at the top level")
    return data


def preset_dict(name: str) -> dict[str, Any]:
    """The preset's YAML merged over the defaults, as a plain dict."""
    path = resources.files("scorekit.config.presets") / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return _merge(Config().to_dict(), _read_yaml(path, f"preset {name}"), "")


def _merge(base: dict[str, Any], update: dict[str, Any], prefix: str) -> dict[str, Any]:
    for key, value in update.items():
        if key not in base:
            raise ConfigError(unknown_key(prefix, key, base))
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key}: expected a mapping, got {value!r}")
            _merge(base[key], value, f"{prefix}{key}.")
        else:
            base[key] = value
    return base


def load_config(source: str | Path, overrides: list[str] | None = None) -> Config:
    """A preset name or a YAML file (a full config or a partial one over the defaults), with overrides."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = _merge(Config().to_dict(), _read_yaml(path, str(path)), "")
    else:
        data = preset_dict(str(source))
    return from_dict(apply_overrides(data, overrides or []))
