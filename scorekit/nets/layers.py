"""Building blocks of the DDPM U-Net (Ho et al. 2020, App. B; authors' diffusion_tf/models/unet.py).

Module names follow the authors' variable names (as kept by the PyTorch port of their weights), so
their checkpoints map onto these modules key for key.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def variance_scaling_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """TF's variance_scaling(scale, mode='fan_avg', distribution='uniform'), the authors' default_init."""
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    limit = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
    with torch.no_grad():
        return weight.uniform_(-limit, limit)


def init_(module: nn.Conv2d | nn.Linear, zero: bool = False) -> nn.Module:
    """Variance-scaling weights and zero biases; ``zero`` gives the zero-initialised output layers."""
    if zero:
        nn.init.zeros_(module.weight)
    else:
        variance_scaling_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int | None = None,
         zero: bool = False) -> nn.Conv2d:
    return init_(nn.Conv2d(cin, cout, k, stride, k // 2 if padding is None else padding), zero)


def linear(cin: int, cout: int, zero: bool = False) -> nn.Linear:
    return init_(nn.Linear(cin, cout), zero)


def group_norm(ch: int, groups: int = 0) -> nn.GroupNorm:
    """GroupNorm with TF's epsilon 1e-6: ``groups`` groups, or (0) the paper's 32 where 32 divides the channels
    and gcd(32, ch) elsewhere. Beware the latter on narrow layers: with one channel per group GroupNorm is an
    instance norm, which removes the per-channel bias by which a ResnetBlock adds the time (and class)
    embedding; narrow networks should set one group count for all layers (``model.norm_groups``)."""
    if groups:
        return nn.GroupNorm(groups, ch, eps=1e-6)
    return nn.GroupNorm(32 if ch % 32 == 0 else math.gcd(32, ch), ch, eps=1e-6)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of (possibly fractional) timesteps: [sin(t w_k), cos(t w_k)],
    w_k = 10000^(-k / (dim/2 - 1)), k = 0..dim/2-1 (authors' get_timestep_embedding); in float32, or float64 for
    float64 timesteps."""
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    freqs = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, device=t.device, dtype=dtype))
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResnetBlock(nn.Module):
    """GN -> Swish -> conv3x3 -> + Dense(temb) -> GN -> Swish -> dropout -> conv3x3 (zero init), + shortcut."""

    def __init__(self, cin: int, cout: int, temb_ch: int, dropout: float, groups: int = 0):
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = conv(cin, cout)
        self.temb_proj = linear(temb_ch, cout)
        self.norm2 = group_norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(cout, cout, zero=True)
        self.nin_shortcut = conv(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, q/k/v 1x1 projections, zero-initialised output.

    q, k and v come from one fused 1x1 convolution (one matmul instead of three); the authors' separate
    q/k/v weights load into it through :meth:`_load_from_state_dict`.
    """

    def __init__(self, ch: int, groups: int = 0):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        for i in range(3):  # initialise as three separate layers, as the authors do
            variance_scaling_(self.qkv.weight.data[i * ch:(i + 1) * ch])
        nn.init.zeros_(self.qkv.bias)
        self.proj_out = conv(ch, ch, 1, zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, 1, C, H * W).permute(1, 0, 2, 4, 3).contiguous()
        h = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, 1, HW, C), scale C^-1/2
        h = h[:, 0].transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(h)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        names = [prefix + n for n in ("q", "k", "v")]
        if all(n + ".weight" in state_dict for n in names):
            for kind in ("weight", "bias"):
                state_dict[f"{prefix}qkv.{kind}"] = torch.cat([state_dict.pop(f"{n}.{kind}") for n in names])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Downsample(nn.Module):
    """3x3 convolution with stride 2 and TF's 'SAME' padding (one pixel on the right and bottom only)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = conv(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = conv(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
