"""NCSN v1 (conditional RefineNet with dilations) and NCSNv2 / NCSNv2Deeper / NCSNv2Deepest.

Input images in [0, 1] are mapped to 2x - 1 inside (the authors' ``centered: false``); on a VP process, whose
data is already in [-1, 1], ``centered=True`` takes them as they are. NCSN v1 returns the score and is
conditioned on the level index; the NCSNv2 networks are unconditional (technique 3) and return sigma * score,
which the denoiser divides by sigma (or, trained as a DDPM model, eps).
"""

from __future__ import annotations

import torch
from torch import nn

from .refine_layers import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus, RefineBlock, ResidualBlock

# Stages (name, out channels as a multiple of ngf, resample, dilation) and refine blocks
# (name, input multiples, output multiple) of each architecture, from the authors' models/.
ARCHS = {
    "ncsnv2": dict(
        stages=[("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", 2), ("res4", 2, "down", 4)],
        refines=[("refine1", 2, 2), ("refine2", 2, 2), ("refine3", 2, 1), ("refine4", 1, 1)]),
    "ncsnv2_deeper": dict(
        stages=[("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", None),
                ("res4", 4, "down", 2), ("res5", 4, "down", 4)],
        refines=[("refine1", 4, 4), ("refine2", 4, 2), ("refine3", 2, 2), ("refine4", 2, 1), ("refine5", 1, 1)]),
    "ncsnv2_deepest": dict(
        stages=[("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", None),
                ("res31", 2, "down", None), ("res4", 4, "down", 2), ("res5", 4, "down", 4)],
        refines=[("refine1", 4, 4), ("refine2", 4, 2), ("refine31", 2, 2), ("refine3", 2, 2), ("refine4", 2, 1),
                 ("refine5", 1, 1)]),
}
ARCHS["ncsn"] = ARCHS["ncsnv2"]  # NCSN v1 has NCSNv2's layout with conditional norms


class RefineNet(nn.Module):
    """``forward(x, label[, y])``: x in [0, 1] of shape (B, C, H, W); label is the level index (used by NCSN v1).

    With ``num_labels`` > 0 an NCSNv2 network is class-conditional the way NCSN v1 is noise-conditional: its
    InstanceNorm++ layers take (gamma, alpha, beta) from an embedding of the class y in 0..num_labels (the
    last, num_labels, is the "no class" token of classifier-free guidance). With ``augment_dim`` > 0 the
    parameters of non-leaky augmentation (``aug``) add a per-channel bias after the first convolution (a
    linear map without bias: None and the zero vector are the same)."""

    def __init__(self, arch: str = "ncsnv2", channels: int = 3, ngf: int = 128, num_classes: int | None = None,
                 resolution: int = 32, centered: bool = False, num_labels: int = 0, augment_dim: int = 0):
        super().__init__()
        self.centered, self.augment_dim = centered, augment_dim
        if arch not in ARCHS:
            raise ValueError(f"unknown RefineNet {arch!r}; choose one of {', '.join(ARCHS)}")
        if arch == "ncsn" and num_labels:
            raise ValueError("NCSN v1's norms are conditioned on the noise level; class labels need an NCSNv2 network")
        self.level_conditional = arch == "ncsn"
        self.num_labels = num_labels
        self.conditional = self.level_conditional or num_labels > 0
        nc = num_classes if self.level_conditional else (num_labels + 1 if num_labels else None)
        spec = ARCHS[arch]
        self.begin_conv = nn.Conv2d(channels, ngf, 3, padding=1)
        if augment_dim:
            self.map_augment = nn.Linear(augment_dim, ngf, bias=False)
            nn.init.normal_(self.map_augment.weight)
        self.stage_names = [s[0] for s in spec["stages"]]
        self.refine_names = [r[0] for r in spec["refines"]]
        cin = ngf
        for i, (name, mult, resample, dilation) in enumerate(spec["stages"]):
            cout = mult * ngf
            adjust = resolution == 28 and name == "res4"  # the authors' 28x28 (MNIST) padding fix
            setattr(self, name, nn.ModuleList([
                ResidualBlock(cin, cout, resample if i else None, dilation, adjust, nc),
                ResidualBlock(cout, cout, None, dilation, False, nc)]))
            cin = cout
        for i, (name, in_mult, out_mult) in enumerate(spec["refines"]):
            planes = [in_mult * ngf] if i == 0 else [in_mult * ngf, in_mult * ngf]
            setattr(self, name, RefineBlock(planes, out_mult * ngf, start=i == 0, end=i == len(spec["refines"]) - 1,
                                            num_classes=nc))
        self.normalizer = ConditionalInstanceNorm2dPlus(ngf, nc) if self.conditional else InstanceNorm2dPlus(ngf)
        self.act = nn.ELU()
        self.end_conv = nn.Conv2d(ngf, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None, y: torch.Tensor | None = None,
                aug: torch.Tensor | None = None) -> torch.Tensor:
        if self.level_conditional:
            y = label
        elif self.num_labels:
            y = (torch.full((x.shape[0],), self.num_labels, device=x.device) if y is None else y).long()
        else:
            y = None
        h = self.begin_conv(x if self.centered else 2 * x - 1.0)
        if aug is not None:
            if not self.augment_dim:
                raise ValueError("augmentation parameters given to a RefineNet built without augment_dim")
            h = h + self.map_augment(aug.to(h))[:, :, None, None]
        layers = []
        for name in self.stage_names:
            for block in getattr(self, name):
                h = block(h, y)
            layers.append(h)
        ref = None
        for i, name in enumerate(self.refine_names):
            skip = layers[len(layers) - 1 - i]
            xs = [skip] if ref is None else [skip, ref]
            ref = getattr(self, name)(xs, skip.shape[2:], y)
        out = self.normalizer(ref, y) if self.conditional else self.normalizer(ref)
        return self.end_conv(self.act(out))


def build_refinenet(arch: str, *, channels: int = 3, ngf: int = 128, num_levels: int = 10,
                    resolution: int = 32, centered: bool = False, num_labels: int = 0,
                    augment_dim: int = 0) -> RefineNet:
    return RefineNet(arch, channels, ngf, num_levels, resolution, centered, num_labels, augment_dim)
