"""Autoguidance and guidance intervals: a guided network looks to every sampler like any other network.

* Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"):
  D_w = D_guide + w (D_main - D_guide), the guide a weaker model of the same kind (same process, parameterisation
  and image shape). Every output a network gives is affine in D at fixed x_t and t, so the outputs are mixed
  directly; w = 1 is the main model. It applies to unconditional models, which classifier-free guidance cannot guide.
* Guidance interval (Kynkaanniemi et al. 2024): guidance only for sigma in (sigma_lo, sigma_hi]; the plain model
  elsewhere.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ScorekitError
from .denoiser import Denoiser
from .meanflow import is_mean_flow


def sigma_of_label(denoiser: Denoiser):
    """The function from the network's label to the noise level sigma = s / a: EDM's c_noise = ln(sigma) / 4, or the
    process's level label."""
    if denoiser.precond == "edm":
        return lambda label: torch.exp(4 * label.double())
    process = denoiser._label_process
    return lambda label: process.sigma(process.t_of_label(label.double().to(process.device)))


def in_interval(sigma: torch.Tensor, interval: tuple[float, float] | None) -> torch.Tensor | None:
    """Per-image mask sigma_lo < sigma <= sigma_hi (None: no interval, guide everywhere)."""
    if interval is None:
        return None
    lo, hi = interval
    return (sigma > lo) & (sigma <= hi)


def guided_mix(base: torch.Tensor, target: torch.Tensor, scale: float, learned_variance: bool,
               inside: torch.Tensor | None = None) -> torch.Tensor:
    """base + scale (target - base) on the estimate's channels (a learned variance's channels stay the target's);
    ``inside`` (per image): where the mix applies, the target elsewhere (None: everywhere)."""
    c = target.shape[1] // 2 if learned_variance else target.shape[1]
    mixed = torch.cat([base[:, :c] + scale * (target[:, :c] - base[:, :c]), target[:, c:]], dim=1)
    if inside is None:
        return mixed
    return torch.where(inside.to(target.device).view(-1, *([1] * (target.ndim - 1))), mixed, target)


class AutoGuidedNet(nn.Module):
    """``net(x, label, ...)`` of the main network guided by ``guide``: guide + w (main - guide) on the estimate's
    channels (a learned variance stays the main model's), inside ``interval`` only."""

    def __init__(self, main: nn.Module, guide: nn.Module, weight: float, interval: tuple[float, float] | None = None,
                 to_sigma=None, learned_variance: bool = False):
        super().__init__()
        self.main, self.guide, self.weight = main, guide, float(weight)
        self.interval, self.to_sigma, self.learned_variance = interval, to_sigma, learned_variance

    def forward(self, x: torch.Tensor, label: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        main = self.main(x, label, *args, **kwargs)
        if self.weight == 1.0:
            return main
        mask = in_interval(self.to_sigma(label), self.interval) if self.interval is not None else None
        if mask is not None and not bool(mask.any()):
            return main
        guide = self.guide(x, label, *args, **kwargs).to(main.dtype)
        return guided_mix(guide, main, self.weight, self.learned_variance, mask)


def check_guide(denoiser: Denoiser, guide: Denoiser) -> None:
    """A guide of the same family, process, parameterisation and image shape; else a one-line refusal."""
    a, b = getattr(denoiser, "config", None), getattr(guide, "config", None)
    pa, pb = denoiser.process, guide.process
    same_levels = pa.num_levels == pb.num_levels and torch.allclose(pa.sigmas.cpu(), pb.sigmas.cpu())
    checks = [("process", f"{pa.kind}, {pa.num_levels} levels", f"{pb.kind}, {pb.num_levels} levels"
               + ("" if same_levels else " (other noise levels)")),
              ("image shape", denoiser.image_shape, guide.image_shape), ("output", denoiser.output, guide.output),
              ("preconditioning", denoiser.precond, guide.precond),
              ("consistency", denoiser.consistency, guide.consistency)]
    if a is not None and b is not None:
        checks = [("family", a.family, b.family), ("process", a.process, b.process),
                  ("model.num_classes", a.model.num_classes, b.model.num_classes), *checks]
    for what, mine, theirs in checks:
        if mine != theirs:
            raise ScorekitError(f"--guide: the guide's {what} ({theirs}) differs from the run's ({mine}); a guide is "
                                "a weaker model of the same kind")
    if is_mean_flow(denoiser):
        raise ScorekitError("--guide: a MeanFlow model's average velocity is not guided here")


def autoguided(denoiser: Denoiser, guide: Denoiser, weight: float,
               interval: tuple[float, float] | None = None) -> Denoiser:
    """``denoiser`` autoguided by ``guide`` with weight ``weight`` (>= 0; 1 = unguided), only for sigma in
    ``interval`` = (sigma_lo, sigma_hi] if given."""
    if not (weight >= 0 and math.isfinite(weight)):
        raise ScorekitError(f"--guidance: the autoguidance weight must be >= 0, got {weight}")
    if interval is not None and not 0 <= interval[0] < interval[1]:
        raise ScorekitError(f"--guidance-interval: needs 0 <= SIGMA_LO < SIGMA_HI, got {interval[0]},{interval[1]}")
    check_guide(denoiser, guide)
    net = AutoGuidedNet(denoiser.net, guide.net, weight, interval, sigma_of_label(denoiser),
                        denoiser.variance.is_learned)
    return denoiser.with_net(net)
