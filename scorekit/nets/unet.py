"""The DDPM U-Net (Ho et al. 2020, App. B): a PixelCNN++ backbone with time embedding and attention.

The network only maps (x_t, t) to an output of ``out_ch`` channels; it knows nothing of noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AttnBlock, Downsample, ResnetBlock, Upsample, conv, group_norm, linear, timestep_embedding

# Named configurations of the paper (and small ones for CPU work).
UNET_CONFIGS = {
    "cifar10": dict(resolution=32, ch=128, ch_mult=(1, 2, 2, 2), attn_resolutions=(16,), dropout=0.1),
    "256": dict(resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4, 4), attn_resolutions=(16,), dropout=0.0),
    "small": dict(resolution=32, ch=64, ch_mult=(1, 2, 2), attn_resolutions=(16,), dropout=0.1),
    "tiny": dict(resolution=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0),
}


class _Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class UNet(nn.Module):
    """DDPM U-Net: ``forward(x, t[, y])`` with x of shape (B, in_ch, R, R), t of shape (B,) (timesteps) and, for
    ``num_classes`` > 0, class labels y in 0..num_classes (num_classes itself is the "no class" token of
    classifier-free guidance): a learned class embedding is added to the time embedding (improved DDPM).
    ``augment_dim`` > 0: ``forward(..., aug=...)`` takes non-leaky augmentation's parameters, mapped linearly
    (no bias: None and the zero vector are the same) and added to the time embedding like the class embedding
    (EDM's map_augment adds them before the embedding's MLP; after it, the small digits U-Net learns them
    several times faster). ``mean_flow``: a second time input ``gap`` = the network's label of t - r (MeanFlow's
    average velocity u(z, r, t) reads (t, t - r), Geng et al. 2025), through its own embedding MLP added like the
    class embedding; ``gap=None`` is 0, so the plain call is u(z, t, t) = v(z, t)."""

    def __init__(self, *, resolution: int = 32, in_ch: int = 3, out_ch: int = 3, ch: int = 128,
                 ch_mult: tuple[int, ...] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), dropout: float = 0.1, num_classes: int = 0,
                 norm_groups: int = 0, augment_dim: int = 0, mean_flow: bool = False):
        super().__init__()
        self.mean_flow = mean_flow
        self.num_classes, self.norm_groups, self.augment_dim = num_classes, norm_groups, augment_dim
        g = norm_groups
        if resolution % (2 ** (len(ch_mult) - 1)):
            raise ValueError(f"resolution {resolution} is not divisible by 2^{len(ch_mult) - 1}")
        self.ch, self.temb_ch = ch, 4 * ch
        self.resolution, self.in_ch, self.out_ch = resolution, in_ch, out_ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([linear(ch, self.temb_ch), linear(self.temb_ch, self.temb_ch)])
        if mean_flow:
            self.gap_emb = nn.ModuleList([linear(ch, self.temb_ch), linear(self.temb_ch, self.temb_ch)])
        if num_classes:
            self.class_emb = nn.Embedding(num_classes + 1, self.temb_ch)
        if augment_dim:  # initialised like the class embedding: a flip moves temb as far as a change of class
            self.map_augment = nn.Linear(augment_dim, self.temb_ch, bias=False)
            nn.init.normal_(self.map_augment.weight)
        self.conv_in = conv(in_ch, ch)

        skips, res, cur = [ch], resolution, ch
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            level = _Level()
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(cur, ch * mult, self.temb_ch, dropout, g))
                cur = ch * mult
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cur, g))
                skips.append(cur)
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(cur)
                res //= 2
                skips.append(cur)
            self.down.append(level)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(cur, cur, self.temb_ch, dropout, g)
        self.mid.attn_1 = AttnBlock(cur, g)
        self.mid.block_2 = ResnetBlock(cur, cur, self.temb_ch, dropout, g)

        up = []
        for i, mult in reversed(list(enumerate(ch_mult))):
            level = _Level()
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(cur + skips.pop(), ch * mult, self.temb_ch, dropout, g))
                cur = ch * mult
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cur, g))
            if i != 0:
                level.upsample = Upsample(cur)
                res *= 2
            up.insert(0, level)
        self.up = nn.ModuleList(up)  # indexed like ``down``: up[0] is the full-resolution level
        self.norm_out = group_norm(cur, g)
        self.conv_out = conv(cur, out_ch, zero=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                aug: torch.Tensor | None = None, gap: torch.Tensor | None = None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self._embed(self.temb.dense, t)
        if self.mean_flow:
            temb = temb + self._embed(self.gap_emb, torch.zeros_like(t) if gap is None else gap.expand_as(t))
        elif gap is not None:
            raise ValueError("a time gap t - r given to a U-Net built without mean_flow")
        if self.num_classes:
            y = torch.full_like(t, self.num_classes, dtype=torch.long) if y is None else y.long()
            temb = temb + self.class_emb(y.to(x.device))
        if aug is not None:
            if not self.augment_dim:
                raise ValueError("augmentation parameters given to a U-Net built without augment_dim")
            temb = temb + self.map_augment(aug.to(temb))
        temb = F.silu(temb)  # swish(temb) feeds every block
        hs = [self.conv_in(x)]
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(hs[-1], temb)
                if len(level.attn):
                    h = level.attn[j](h)
                hs.append(h)
            if hasattr(level, "downsample"):
                hs.append(level.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _embed(self, dense: nn.ModuleList, t: torch.Tensor) -> torch.Tensor:
        """Dense(swish(Dense(sinusoidal(t)))): the time embedding before the class and augmentation terms."""
        emb = timestep_embedding(t, self.ch).to(dense[0].weight.dtype)
        return dense[1](F.silu(dense[0](emb)))
