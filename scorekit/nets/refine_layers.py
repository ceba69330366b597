"""Building blocks of the NCSN / NCSNv2 RefineNets (authors' models/layers.py and normalization.py).

Module and parameter names follow the authors' code so that their checkpoints load key for key.
InstanceNorm++ (NCSN Eq. in App. A) adds the normalised channel means back, scaled by alpha:
  h = gamma * (IN(x) + alpha * (mu - mean(mu)) / sqrt(var(mu) + 1e-5)) + beta.
The conditional variant takes (gamma, alpha, beta) from an embedding of the noise level's index; a
fractional index interpolates linearly between the neighbouring rows (exact at integers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)


def _plus_terms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance-normalised x and the normalised per-channel means (B, C, 1, 1)."""
    means = x.mean(dim=(2, 3))
    m = means.mean(dim=-1, keepdim=True)
    v = means.var(dim=-1, keepdim=True)
    means = (means - m) / torch.sqrt(v + 1e-5)
    return F.instance_norm(x), means[..., None, None]


class InstanceNorm2dPlus(nn.Module):
    def __init__(self, features: int, bias: bool = True):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(features).normal_(1, 0.02))
        self.gamma = nn.Parameter(torch.empty(features).normal_(1, 0.02))
        self.beta = nn.Parameter(torch.zeros(features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, means = _plus_terms(x)
        out = self.gamma[:, None, None] * (h + means * self.alpha[:, None, None])
        return out + self.beta[:, None, None] if self.beta is not None else out


def embedding_at(weight: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rows of ``weight`` at (possibly fractional) indices y, linearly interpolated between neighbours."""
    if not torch.is_floating_point(y) or bool((y == y.floor()).all()):
        return weight[y.long()]
    y = y.clamp(0, weight.shape[0] - 1)
    lo = y.floor().long().clamp(max=weight.shape[0] - 2)
    w = (y - lo).to(weight.dtype)[:, None]
    return weight[lo] * (1 - w) + weight[lo + 1] * w


class ConditionalInstanceNorm2dPlus(nn.Module):
    def __init__(self, features: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.features, self.bias = features, bias
        self.embed = nn.Embedding(num_classes, features * (3 if bias else 2))
        with torch.no_grad():
            self.embed.weight[:, :2 * features].normal_(1, 0.02)  # gamma and alpha ~ N(1, 0.02)
            self.embed.weight[:, 2 * features:].zero_()  # beta = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h, means = _plus_terms(x)
        params = embedding_at(self.embed.weight, y)
        gamma, alpha = params[:, :self.features, None, None], params[:, self.features:2 * self.features, None, None]
        out = gamma * (h + means * alpha)
        return out + params[:, 2 * self.features:, None, None] if self.bias else out


class ConvMeanPool(nn.Module):
    """Convolution then 2x2 mean pooling (adjust_padding: one extra zero row/column first, for 28x28)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, adjust_padding: bool = False):
        super().__init__()
        conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)
        self.conv = nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), conv) if adjust_padding else conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return (h[:, :, ::2, ::2] + h[:, :, 1::2, ::2] + h[:, :, ::2, 1::2] + h[:, :, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
    """Pre-activation block: norm -> ELU -> conv -> norm -> ELU -> conv, plus shortcut. ``down`` halves the
    resolution with ConvMeanPool, unless ``dilation`` is set: then dilated convolutions replace it (the
    resolution is kept), as in the authors' code. ``num_classes`` makes the norms conditional (NCSN v1)."""

    def __init__(self, cin: int, cout: int, resample: str | None = None, dilation: int | None = None,
                 adjust_padding: bool = False, num_classes: int | None = None):
        super().__init__()
        self.conditional = num_classes is not None

        def norm(ch: int) -> nn.Module:
            return ConditionalInstanceNorm2dPlus(ch, num_classes) if self.conditional else InstanceNorm2dPlus(ch)

        self.act = nn.ELU()
        self.needs_shortcut = cin != cout or resample is not None
        d = dilation or 1
        if resample == "down":
            self.conv1 = conv3x3(cin, cin, dilation=d)
            self.normalize2 = norm(cin)
            if dilation is not None:
                self.conv2 = conv3x3(cin, cout, dilation=d)
                shortcut = conv3x3(cin, cout, dilation=d)
            else:
                self.conv2 = ConvMeanPool(cin, cout, 3, adjust_padding)
                shortcut = ConvMeanPool(cin, cout, 1, adjust_padding)
        elif resample is None:
            self.conv1 = conv3x3(cin, cout, dilation=d)
            self.normalize2 = norm(cout)
            self.conv2 = conv3x3(cout, cout, dilation=d)
            shortcut = conv3x3(cin, cout, dilation=d) if dilation is not None else nn.Conv2d(cin, cout, 1)
        else:
            raise ValueError(f"invalid resample {resample!r}")
        if self.needs_shortcut:
            self.shortcut = shortcut
        self.normalize1 = norm(cin)

    def _norm(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return module(x, y) if self.conditional else module(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(self.act(self._norm(self.normalize1, x, y)))
        h = self.conv2(self.act(self._norm(self.normalize2, h, y)))
        return (self.shortcut(x) if self.needs_shortcut else x) + h


class RCUBlock(nn.Module):
    """Residual conv units: n_blocks x (n_stages x [norm?] -> ELU -> conv3x3 without bias) + identity."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, num_classes: int | None = None):
        super().__init__()
        self.n_blocks, self.n_stages, self.conditional = n_blocks, n_stages, num_classes is not None
        self.act = nn.ELU()
        for i in range(n_blocks):
            for j in range(n_stages):
                if self.conditional:
                    setattr(self, f"{i + 1}_{j + 1}_norm", ConditionalInstanceNorm2dPlus(features, num_classes))
                setattr(self, f"{i + 1}_{j + 1}_conv", conv3x3(features, features, bias=False))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        for i in range(self.n_blocks):
            residual = x
            for j in range(self.n_stages):
                if self.conditional:
                    x = getattr(self, f"{i + 1}_{j + 1}_norm")(x, y)
                x = getattr(self, f"{i + 1}_{j + 1}_conv")(self.act(x))
            x = x + residual
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: ELU, then n_stages x ([norm?] -> 5x5 pool -> conv3x3) each added back.
    NCSNv2 pools with max; the conditional (NCSN v1) block with average (authors' CondCRPBlock)."""

    def __init__(self, features: int, n_stages: int, num_classes: int | None = None):
        super().__init__()
        self.conditional = num_classes is not None
        self.act = nn.ELU()
        self.convs = nn.ModuleList([conv3x3(features, features, bias=False) for _ in range(n_stages)])
        if self.conditional:
            self.norms = nn.ModuleList([ConditionalInstanceNorm2dPlus(features, num_classes) for _ in range(n_stages)])
            self.pool = nn.AvgPool2d(5, stride=1, padding=2)
        else:
            self.pool = nn.MaxPool2d(5, stride=1, padding=2)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.act(x)
        path = x
        for i, conv in enumerate(self.convs):
            if self.conditional:
                path = self.norms[i](path, y)
            path = conv(self.pool(path))
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: [norm?] -> conv3x3 per input, bilinear (align_corners) resize, sum."""

    def __init__(self, in_planes: list[int], features: int, num_classes: int | None = None):
        super().__init__()
        self.conditional = num_classes is not None
        self.convs = nn.ModuleList([conv3x3(c, features) for c in in_planes])
        if self.conditional:
            self.norms = nn.ModuleList([ConditionalInstanceNorm2dPlus(c, num_classes) for c in in_planes])

    def forward(self, xs: list[torch.Tensor], shape: tuple[int, int], y: torch.Tensor | None = None) -> torch.Tensor:
        total = 0
        for i, x in enumerate(xs):
            h = self.convs[i](self.norms[i](x, y) if self.conditional else x)
            total = total + F.interpolate(h, size=tuple(shape), mode="bilinear", align_corners=True)
        return total


class RefineBlock(nn.Module):
    """RefineNet block: RCU adaptation of each input, fusion, chained residual pooling, output RCUs."""

    def __init__(self, in_planes: list[int], features: int, start: bool = False, end: bool = False,
                 num_classes: int | None = None):
        super().__init__()
        self.adapt_convs = nn.ModuleList([RCUBlock(c, 2, 2, num_classes) for c in in_planes])
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, num_classes)
        if not start:
            self.msf = MSFBlock(in_planes, features, num_classes)
        self.crp = CRPBlock(features, 2, num_classes)

    def forward(self, xs: list[torch.Tensor], shape: tuple[int, int], y: torch.Tensor | None = None) -> torch.Tensor:
        hs = [adapt(x, y) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, shape, y) if len(hs) > 1 else hs[0]
        return self.output_convs(self.crp(h, y), y)
