"""Non-leaky augmentation (Karras et al. 2022, EDM App. F.2, after Karras et al. 2020, ADA): each geometric
transform of a training image happens with probability p, and its parameters are given to the network as a
conditioning vector that is zero when nothing is done (``vector``). The model learns the transformed images as a
distinct conditional, so sampled with the zero vector it produces the data as it is, not the transforms.

Transforms, in this order: x-flip, y-flip, integer translation (reflection at the border), a rotation by a
multiple of 90 degrees, then isotropic scaling, arbitrary rotation and anisotropic scaling as one affine
resampling (bilinear, reflection padding). The integer ones are exact; rotations turn counter-clockwise as
displayed (torch.rot90's direction). Parameters follow EDM's AugmentPipe: translations ~ N(0, (0.125 size)^2)
rounded to pixels, log2 scales ~ N(0, 0.2^2), angles uniform in (-pi, pi).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENT_DIM = 10  # xflip, yflip, tx, ty (pixels), sin(90k), cos(90k) - 1, log2 scale, sin, cos - 1 of theta, log2 aniso
TRANSLATE_STD, SCALE_STD = 0.125, 0.2  # EDM's AugmentPipe: translate_std (fraction of the size), scale_std (log2)


@dataclass
class Augment:
    """Per-image transform parameters of a batch (identity where a transform was not drawn)."""

    xflip: torch.Tensor  # bool (B,)
    yflip: torch.Tensor  # bool (B,)
    tx: torch.Tensor  # int pixels (B,)
    ty: torch.Tensor  # int pixels (B,)
    k90: torch.Tensor  # int 0..3 (B,)
    scale: torch.Tensor  # log2 isotropic scale (B,)
    theta: torch.Tensor  # rotation angle (B,)
    aniso: torch.Tensor  # log2 anisotropic scale (B,)

    def __getitem__(self, sl) -> Augment:
        return Augment(*(getattr(self, f)[sl] for f in self.__dataclass_fields__))

    def vector(self) -> torch.Tensor:
        """The conditioning vector (B, AUGMENT_DIM): zero for an untransformed image."""
        a90 = self.k90.double() * math.pi / 2
        cols = [self.xflip.double(), self.yflip.double(), self.tx.double(), self.ty.double(),
                torch.sin(a90), torch.cos(a90) - 1, self.scale.double(), torch.sin(self.theta.double()),
                torch.cos(self.theta.double()) - 1, self.aniso.double()]
        return torch.stack(cols, dim=1).float()


def identity(batch: int, device: torch.device | str = "cpu") -> Augment:
    z = torch.zeros(batch, device=device)
    zi = torch.zeros(batch, dtype=torch.long, device=device)
    return Augment(z.bool(), z.bool(), zi, zi, zi, z, z, z)


def draw(p: float, batch: int, size: int, g: torch.Generator, device: torch.device | str = "cpu") -> Augment:
    """Each transform with probability p (independently), with EDM's distributions of its parameter."""
    def on() -> torch.Tensor:
        return torch.rand(batch, generator=g, device=device) < p

    def normal() -> torch.Tensor:
        return torch.randn(batch, generator=g, device=device)

    limit = size // 4
    tx = (normal() * TRANSLATE_STD * size).round().clamp(-limit, limit).long() * on()
    ty = (normal() * TRANSLATE_STD * size).round().clamp(-limit, limit).long() * on()
    k90 = torch.randint(1, 4, (batch,), generator=g, device=device) * on()
    scale = normal() * SCALE_STD * on()
    theta = (torch.rand(batch, generator=g, device=device) * 2 - 1) * math.pi * on()
    aniso = normal() * SCALE_STD * on()
    return Augment(on(), on(), tx, ty, k90, scale, theta, aniso)


def translate(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Move image i by (tx_i, ty_i) pixels (right, down), reflecting at the border."""
    if not (bool(tx.any()) or bool(ty.any())):
        return x
    pad = int(max(tx.abs().max(), ty.abs().max()))
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    for i in range(len(x)):
        top, left = pad - int(ty[i]), pad - int(tx[i])
        out[i] = padded[i, :, top:top + h, left:left + w]
    return out


def apply(x: torch.Tensor, aug: Augment) -> torch.Tensor:
    """The augmented batch: flips, the integer translation and the 90-degree rotation exactly, then the
    isotropic scale, rotation and anisotropic scale as one affine resampling of the images that have any."""
    x = torch.where(aug.xflip[:, None, None, None], x.flip(-1), x)
    x = torch.where(aug.yflip[:, None, None, None], x.flip(-2), x)
    x = translate(x, aug.tx, aug.ty)
    if bool(aug.k90.any()):
        x = torch.stack([torch.rot90(img, int(k), dims=(-2, -1)) for img, k in zip(x, aug.k90)])
    affine = (aug.scale != 0) | (aug.theta != 0) | (aug.aniso != 0)
    if bool(affine.any()):
        s = torch.exp2(aug.scale.float())
        a = torch.exp2(aug.aniso.float())
        c, si = torch.cos(aug.theta.float()), -torch.sin(aug.theta.float())  # counter-clockwise as displayed
        # output coordinates map to input coordinates through the inverse of R(theta) diag(s a, s / a)
        inv = torch.stack([torch.stack([c / (s * a), si / (s * a)], -1), torch.stack([-si * a / s, c * a / s], -1)], 1)
        theta = torch.cat([inv, torch.zeros(len(x), 2, 1, device=x.device)], dim=2)
        grid = F.affine_grid(theta[affine], list(x[affine].shape), align_corners=False)
        x = x.clone()
        x[affine] = F.grid_sample(x[affine], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x
