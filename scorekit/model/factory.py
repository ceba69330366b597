"""Build a process, a network and a denoiser from a :class:`~scorekit.config.Config`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import Config, load_config
from ..data.augment import AUGMENT_DIM
from ..nets.unet import UNet
from ..processes import DiscreteProcess, FlowProcess, SubVPProcess, VEProcess, VPProcess
from ..processes.vdm import refresh_schedule
from .denoiser import Denoiser
from .precond import EDM_SIGMA_MAX


def build_process(cfg: Config) -> DiscreteProcess:
    p = cfg.process
    if p.kind == "vp" and p.schedule == "learned":  # until the network's schedule is loaded: linear in gamma
        from ..processes.vdm import vp_from_gamma

        return vp_from_gamma(torch.linspace(p.gamma_min, p.gamma_max, p.num_timesteps, dtype=torch.float64))
    if p.kind == "vp":
        return VPProcess.from_schedule(p.schedule, p.num_timesteps, p.beta_start, p.beta_end)
    if p.kind == "flow":
        return FlowProcess.from_levels(p.num_timesteps)
    if p.kind == "subvp":
        return SubVPProcess.from_schedule(p.schedule, p.num_timesteps, p.beta_start, p.beta_end)
    return VEProcess.from_ladder(p.sigma_begin, p.sigma_end, p.num_levels, p.ladder)


def build_net(cfg: Config) -> nn.Module:
    m, d = cfg.model, cfg.data
    augment_dim = AUGMENT_DIM if d.augment > 0 else 0
    if m.arch == "classifier":
        from ..nets.classifier import NoiseClassifier

        return NoiseClassifier(resolution=d.resolution, in_ch=d.channels, num_classes=m.num_classes, ch=m.ch,
                               ch_mult=tuple(m.ch_mult), dropout=m.dropout, norm_groups=m.norm_groups or 8)
    if m.arch == "unet":
        out_ch = d.channels * (2 if m.variance in ("learned_range", "learned") else 1)
        unet = UNet(resolution=d.resolution, in_ch=d.channels * (1 + 2 * len(m.fourier)), out_ch=out_ch, ch=m.ch,
                    ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                    attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout, num_classes=m.num_classes,
                    norm_groups=m.norm_groups, augment_dim=augment_dim, mean_flow=m.mean_flow)
        learned = cfg.process.schedule == "learned"
        if not (learned or m.fourier):
            return unet
        from ..nets.vdm import MonotoneGamma, VDMNet

        gamma = MonotoneGamma(cfg.process.gamma_min, cfg.process.gamma_max) if learned else None
        return VDMNet(unet, gamma, m.fourier)
    from ..nets.refinenet import build_refinenet

    p = cfg.process
    return build_refinenet(m.arch, channels=d.channels, ngf=m.ngf,
                           num_levels=p.num_levels if p.kind == "ve" else p.num_timesteps,
                           resolution=d.resolution, centered=p.kind != "ve", num_labels=m.num_classes,
                           augment_dim=augment_dim)


def data_range(cfg: Config) -> tuple[float, float]:
    """DDPM and flows model data in [-1, 1], NCSN in [0, 1]."""
    return (0.0, 1.0) if cfg.process.kind == "ve" else (-1.0, 1.0)


FEWSTEP_SIGMA_MAX = 20.0


def fewstep_sigma_max(cfg: Config) -> float:
    """The largest level of a few-step model: fewstep.sigma_max, else the model's own capped at 20. Noise of std 20
    hides images in [-1, 1] (the prior's mismatch is about 0.5 / (2 * 20^2) nats per dimension), while EDM's 80 or
    DDPM's 157 make one jump undo a 4-8 times larger noise; measured on the digits, one-step samples from 20 are
    far better after a short distillation (README, "One or two network evaluations")."""
    if cfg.fewstep.sigma_max:
        return cfg.fewstep.sigma_max
    top = EDM_SIGMA_MAX if cfg.model.precond == "edm" else build_process(cfg).sigma_max
    return min(FEWSTEP_SIGMA_MAX, top)


def build_denoiser(cfg: Config) -> Denoiser:
    """A denoiser with a freshly initialised network; it carries ``config``."""
    denoiser = Denoiser(build_net(cfg), build_process(cfg), output=cfg.model.output, variance=cfg.model.variance,
                        data_range=data_range(cfg), precond=cfg.model.precond, sigma_data=cfg.model.sigma_data,
                        image_shape=(cfg.data.channels, cfg.data.resolution, cfg.data.resolution),
                        consistency=cfg.model.consistency, boundary=cfg.fewstep.sigma_min,
                        top=fewstep_sigma_max(cfg) if cfg.model.consistency or cfg.training.loss == "pd" else 0.0)
    denoiser.config = cfg
    refresh_schedule(denoiser)
    return denoiser


def build(preset_or_config: str | Path | Config, overrides: list[str] | None = None) -> Denoiser:
    """``scorekit.build("ddpm-cifar10")``: the denoiser of a preset, YAML file or Config, freshly initialised."""
    cfg = preset_or_config if isinstance(preset_or_config, Config) else load_config(preset_or_config, overrides)
    return build_denoiser(cfg)
