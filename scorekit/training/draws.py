"""What a training step draws, and the fixed batches of the held-out loss.

Every random draw of step k (noise levels, noise, flips, dequantization, dropped labels, EDM's noise levels,
augmentations) comes from one generator seeded by (training.seed, k), so a resumed run continues exactly
and data-parallel processes draw the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Config
from ..data import build_source, preprocess
from ..data.augment import Augment
from ..data.augment import draw as draw_augment
from ..errors import DataError
from ..evaluation.likelihood import pixel_max
from ..model.denoiser import Denoiser
from ..processes import DiscreteProcess
from ..rng import image_seed
from .meanflow import draw_times
from .tsampling import LossSecondMomentSampler, continuous_levels
from .vdm import low_discrepancy


class FixedBatches:
    """The first ``training.test_batch`` test images (``test_loss``) and training images (``train_loss_fixed``),
    with the same noise levels and noise every time, so that the two loss curves are smooth and comparable
    (the memorisation check: train loss close to test loss). Class-conditional models see the true labels."""

    def __init__(self, cfg: Config, denoiser: Denoiser, train_source, device: torch.device):
        tc, shape = cfg.training, denoiser.image_shape
        try:
            test_source = build_source(cfg.data, "test")
        except DataError:
            test_source = None
        g = torch.Generator().manual_seed(image_seed(tc.seed, 2**40))
        n = tc.test_batch
        t = torch.randint(0, denoiser.process.num_levels, (n,), generator=g)
        noise = torch.randn((n, *shape), generator=g)
        dequant = torch.rand((n, *shape), generator=g) if cfg.data.dequantize == "uniform" else None
        sigma = edm_sigmas(cfg, n, g, "cpu") if tc.loss == "edm" else None
        self.batches = {}
        for name, src in (("test_loss", test_source), ("train_loss_fixed", train_source)):
            if src is not None:
                k = min(n, len(src))
                u8 = src.images[:k] if src.images is not None else torch.stack([src[i] for i in range(k)])
                x0 = preprocess(u8, denoiser.data_range, dequant_noise=None if dequant is None else dequant[:k],
                                max_value=pixel_max(denoiser))
                y = src.labels[:k].long() if cfg.model.num_classes and src.labels is not None else None
                fields = (x0, t[:k], noise[:k], y, None if sigma is None else sigma[:k])
                self.batches[name] = tuple(None if v is None else v.to(device) for v in fields)


@dataclass
class Draws:
    """The random draws of one global batch; ``sl`` slices one process's micro-batch out of it."""

    t: torch.Tensor  # noise levels (DDPM / NCSN objectives)
    noise: torch.Tensor
    flip: torch.Tensor | None = None
    dequant: torch.Tensor | None = None
    drop: torch.Tensor | None = None  # labels replaced by "no class" (classifier-free guidance)
    sigma: torch.Tensor | None = None  # EDM's log-normal noise levels
    augment: Augment | None = None  # non-leaky augmentation
    weight: torch.Tensor | None = None  # importance weights of the levels t (None: uniform t, weight 1)
    r: torch.Tensor | None = None  # meanflow: the second time r <= t (t and r are then path times in [0, 1])

    def __getitem__(self, sl: slice) -> Draws:
        return Draws(*(None if (v := getattr(self, f)) is None else v[sl] for f in self.__dataclass_fields__))


def step_draws(cfg: Config, step: int, shape: tuple[int, ...], num_levels: int, device: torch.device,
               process: DiscreteProcess | None = None, t_sampler: LossSecondMomentSampler | None = None) -> Draws:
    """Noise levels, noise, flips, dequantization noise, dropped labels, EDM's sigmas and augmentations of the
    whole global batch of ``step`` (the later draws only when the config asks for them, so earlier runs keep
    their streams). The likelihood loss draws fractional levels from ``process``; ``t_sampler`` draws
    importance-sampled levels (both with their weights)."""
    g = torch.Generator(device=device)
    g.manual_seed(image_seed(cfg.training.seed, step))
    tc, B = cfg.training, cfg.training.batch_size
    weight = r = None
    if tc.loss == "meanflow":
        t, r = draw_times(B, g, device, tc.meanflow_ratio, (tc.p_mean, tc.p_std) if tc.t_sampling == "logit_normal"
                          else None)
    elif tc.loss == "likelihood":
        t, weight = continuous_levels(process, B, g, device, tc.t_sampling)
    elif tc.loss == "vdm":  # VDM's low-discrepancy times (Appendix I.1), as fractional levels
        t = low_discrepancy(torch.rand((), generator=g, device=device, dtype=torch.float64), B) * (num_levels - 1)
    elif tc.loss in ("fm", "reflow"):
        t = flow_levels(cfg, process, B, g, device)
    elif t_sampler is not None:
        t, weight = t_sampler.draw(B, g, device)
    else:
        t = torch.randint(0, num_levels, (B,), generator=g, device=device)
    noise = torch.randn((B, *shape), generator=g, device=device)
    flip = torch.rand(B, generator=g, device=device) < 0.5 if cfg.data.random_flip else None
    dequant = torch.rand((B, *shape), generator=g, device=device) if cfg.data.dequantize == "uniform" else None
    drop = torch.rand(B, generator=g, device=device) < tc.label_dropout if tc.label_dropout else None
    sigma = edm_sigmas(cfg, B, g, device) if tc.loss == "edm" else None
    augment = draw_augment(cfg.data.augment, B, shape[-1], g, device) if cfg.data.augment else None
    return Draws(t, noise, flip, dequant, drop, sigma, augment, weight, r)


def flow_levels(cfg: Config, process: DiscreteProcess, n: int, g: torch.Generator, device) -> torch.Tensor:
    """The flow's training times as fractional levels (float64): uniform over the levels' range [t_0, t_{N-1}], or
    SD3's logit-normal (m, s) = (p_mean, p_std), its heavy-tailed mode sampling or 2-rectified flow++'s U shape,
    clamped to that range."""
    from ..processes.flow import logit_normal_tau, mode_tau, u_shaped_tau

    tc = cfg.training
    if tc.t_sampling == "logit_normal":
        tau = logit_normal_tau(n, g, device, tc.p_mean, tc.p_std)
    elif tc.t_sampling == "mode":
        tau = mode_tau(n, g, device, tc.mode_scale)
    elif tc.t_sampling == "u_shaped":
        tau = u_shaped_tau(n, g, device)
    else:
        lo, hi = float(process.taus[0]), float(process.taus[-1])
        tau = lo + (hi - lo) * torch.rand(n, generator=g, device=device, dtype=torch.float64)
    return process.t_of_tau(tau.to(process.device)).to(device)


def edm_sigmas(cfg: Config, n: int, g: torch.Generator, device) -> torch.Tensor:
    """EDM's training noise levels: ln(sigma) ~ N(P_mean, P_std^2) (float64)."""
    z = torch.randn(n, generator=g, device=device, dtype=torch.float64)
    return (cfg.training.p_mean + cfg.training.p_std * z).exp()
