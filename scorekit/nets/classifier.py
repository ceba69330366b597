"""A noise-conditional classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021): a small
encoder (the U-Net's residual blocks with the time embedding, downsampling to 4x4, then a pooled linear
head). It reads the same network label as the model it guides, and is trained by the same loop with
``training.loss: ce`` on the model's process and data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Downsample, ResnetBlock, conv, group_norm, linear, timestep_embedding


class NoiseClassifier(nn.Module):
    """``forward(x, t) -> logits (B, num_classes)``."""

    def __init__(self, *, resolution: int = 8, in_ch: int = 1, num_classes: int = 10, ch: int = 32,
                 ch_mult: tuple[int, ...] = (1, 2), dropout: float = 0.0, norm_groups: int = 8):
        super().__init__()
        self.ch, self.temb_ch, self.num_classes = ch, 4 * ch, num_classes
        self.temb = nn.ModuleList([linear(ch, self.temb_ch), linear(self.temb_ch, self.temb_ch)])
        self.conv_in = conv(in_ch, ch)
        blocks, cur = [], ch
        for i, mult in enumerate(ch_mult):
            blocks.append(ResnetBlock(cur, ch * mult, self.temb_ch, dropout, norm_groups))
            cur = ch * mult
            if i != len(ch_mult) - 1:
                blocks.append(Downsample(cur))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = group_norm(cur, norm_groups)
        self.head = linear(cur, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = F.silu(self.temb[1](F.silu(self.temb[0](timestep_embedding(t, self.ch).to(x.dtype)))))
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, temb) if isinstance(block, ResnetBlock) else block(h)
        return self.head(F.silu(self.norm_out(h)).mean(dim=(2, 3)))
