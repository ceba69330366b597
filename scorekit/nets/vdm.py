"""VDM's network parts (Kingma, Salimans, Poole & Ho 2021): the learned monotone noise schedule gamma(t) and the
Fourier features of the input (Appendix C), around any score network."""

from __future__ import annotations

import math

import torch
from torch import nn


class MonotoneGamma(nn.Module):
    """gamma(t) = -log SNR(t) on t in [0, 1], increasing: gamma_0 + (gamma_1 - gamma_0) * shape(t), with learned
    endpoints gamma_0 = gamma(0), gamma_1 = gamma(1) and shape(t) = (f(t) - f(0)) / (f(1) - f(0)) for VDM's
    monotone network f(t) = l1(t) + l3(phi(l2(2t - 1))) / n, every weight taken in absolute value and
    phi(h) = 2 (sigmoid(h) - 1/2) (VDM Appendix H, NoiseSchedule_NNet). Initially f is linear plus a small
    bump. The endpoints are trained on the bound; the shape on the bound's variance (:mod:`scorekit.training.vdm`)."""

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0, features: int = 1024):
        super().__init__()
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_min)))
        self.gamma_1 = nn.Parameter(torch.tensor(float(gamma_max)))
        self.w1 = nn.Parameter(torch.ones(1))
        self.l2 = nn.Linear(1, features)
        self.w3 = nn.Parameter(torch.randn(features) / math.sqrt(features))
        nn.init.normal_(self.l2.weight)
        self.features = features

    def f(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(t) and f'(t) (written out, so that both are plain functions of the parameters)."""
        t = t.reshape(-1, 1).to(self.w1.dtype)
        w2, w3 = self.l2.weight.abs(), self.w3.abs()[:, None] / self.features
        sig = torch.sigmoid(nn.functional.linear(2 * t - 1, w2, self.l2.bias))
        value = t * self.w1.abs() + (2 * (sig - 0.5)) @ w3
        slope = self.w1.abs() + (4 * sig * (1 - sig) * w2.T) @ w3
        return value.squeeze(1), slope.squeeze(1)

    def shape(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The schedule's shape on [0, 1] (0 at t = 0, 1 at t = 1, increasing) and its slope."""
        ends, _ = self.f(torch.tensor([0.0, 1.0], device=self.w1.device))
        value, slope = self.f(t)
        return ((value - ends[0]) / (ends[1] - ends[0])).reshape(t.shape), (slope / (ends[1] - ends[0])).reshape(
            t.shape)

    def value_and_slope(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """gamma(t), gamma'(t), and the shape's two tensors (where the variance gradient is hooked in)."""
        shape, slope = self.shape(t)
        span = self.gamma_1 - self.gamma_0
        return self.gamma_0 + span * shape, span * slope, (shape, slope)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.value_and_slope(t)[0]


class FourierInput(nn.Module):
    """The network sees x and sin / cos(2^n pi x) for n in ``exponents`` as extra input channels (VDM Appendix C:
    high frequencies, near the data's quantisation step, where the finest detail sits)."""

    def __init__(self, exponents: list[int] | tuple[int, ...]):
        super().__init__()
        self.register_buffer("freq", torch.tensor([2.0**n * math.pi for n in exponents]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(self.freq):
            return x
        h = x[:, :, None] * self.freq.to(x.dtype)[None, None, :, None, None]
        h = torch.cat([h.sin(), h.cos()], 2).flatten(1, 2)
        return torch.cat([x, h], 1)


class VDMNet(nn.Module):
    """A score network with VDM's parts: ``gamma`` (a learned schedule, or None for a fixed one) and Fourier
    features of its input. Called as the network it wraps."""

    def __init__(self, net: nn.Module, gamma: MonotoneGamma | None = None, fourier: list[int] | tuple[int, ...] = ()):
        super().__init__()
        self.net, self.gamma, self.fourier = net, gamma, FourierInput(fourier)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.net(self.fourier(x), *args, **kwargs)
