"""The configured objective of one training step, and the learning rate at a step."""

from __future__ import annotations

import torch

from ..config import Config
from ..model.denoiser import Denoiser
from .losses import ddpm_loss, dsm_loss, edm_loss, fm_loss, huber_c, likelihood_loss
from .meanflow import meanflow_loss
from .vdm import vdm_loss


def objective(cfg: Config, denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
              y: torch.Tensor | None = None, *, sigma: torch.Tensor | None = None,
              aug: torch.Tensor | None = None, weight: torch.Tensor | None = None,
              r: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example loss of the configured objective (``y``: class labels, for class-conditional models;
    ``sigma``: EDM's noise levels, which replace ``t``; ``aug``: augmentation parameters, the network's
    conditioning; ``weight``: the likelihood loss's weights of its fractional levels ``t``; ``r``: MeanFlow's second
    time, where ``t`` and ``r`` are path times in [0, 1]; without ``r``, meanflow's loss is flow matching at levels
    ``t``, u(z, t, t) = v, as on the fixed held-out batches)."""
    if cfg.training.loss == "likelihood":
        return likelihood_loss(denoiser, x0, t, noise, weight, y=y, aug=aug)
    if cfg.training.loss == "vdm":  # t: levels 0..T-1, VDM's time t / (T - 1)
        return vdm_loss(denoiser, x0, t.double() / (denoiser.process.num_levels - 1), noise,
                        cfg.training.vdm_steps, y=y, aug=aug)
    if cfg.training.loss == "meanflow" and r is not None:
        return meanflow_loss(denoiser.net, x0, t, r, noise, cfg.training.adaptive_p, y=y)
    if cfg.training.loss in ("fm", "reflow", "meanflow"):  # reflow: x0 and noise are a teacher's pair
        huber = cfg.fewstep.reflow_distance == "pseudo_huber"  # refused outside reflow (config checks)
        return fm_loss(denoiser, x0, t, noise, y=y, aug=aug, huber_c=huber_c(cfg, x0[0].numel()) if huber else None)
    if cfg.training.loss == "edm":
        return edm_loss(denoiser, x0, sigma, noise, cfg.model.sigma_data, y=y, aug=aug)
    if cfg.training.loss == "dsm":
        return dsm_loss(denoiser, x0, t, noise, cfg.training.anneal_power, y=y, aug=aug)
    if cfg.training.loss == "ce":  # a noise-conditional classifier on x_t (classifier guidance)
        logits = denoiser.raw(denoiser.process.q_sample(x0, t, noise), t)
        return torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
    return ddpm_loss(denoiser, x0, t, noise, cfg.training.loss, y=y, aug=aug)


def learning_rate(cfg: Config, step: int) -> float:
    """Linear warmup as in the DDPM code: lr * min(step / warmup, 1), step = updates done so far."""
    w = cfg.training.warmup
    return cfg.training.lr * (min(step / w, 1.0) if w > 0 else 1.0)
