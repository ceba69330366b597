"""DINOv2 features for FD_DINOv2 (Stein et al. 2023; EDM2's second metric), from a local weights file.

The graph is the official DINOv2 vision transformer (facebookresearch/dinov2, the ``dinov2_vitl14`` backbone that
EDM2 and dgm-eval load through torch.hub), with its state-dict names, so its published
``dinov2_vitl14_pretrain.pth`` (or the S/14, B/14 and register variants) loads as it is: a 14x14 patch embedding,
a class token (and register tokens), learned position embeddings for a 37x37 grid resized for the input with the
official call (bicubic, no antialiasing, scale factor (grid + 0.1) / 37), pre-norm blocks with LayerScale
(LayerNorm eps 1e-6, GELU MLP), and the class token after the final norm as the feature (1024-d for ViT-L/14).

Preprocessing is EDM2's (``calculate_metrics.py``, resize mode "torch", which it describes as almost the same as
dgm-eval's PIL resize): uint8 RGB (grey repeated) resized to 224x224 by bicubic interpolation with antialiasing,
divided by 255, normalised by ImageNet's mean and std. Nothing is downloaded: give the file with
``--dinov2-weights`` or $SCOREKIT_DINOV2_WEIGHTS.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ScorekitError

WEIGHTS_ENV = "SCOREKIT_DINOV2_WEIGHTS"
WEIGHT_FILE = "dinov2_vitl14_pretrain.pth"
RESOLUTION = 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INTERPOLATE_OFFSET = 0.1  # the official backbones' "historical kludge" in resizing the position embeddings


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim, hidden)
        self.ls1, self.ls2 = LayerScale(dim), LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DINOv2(nn.Module):
    """The DINOv2 ViT backbone: normalised images (N, 3, H, W), H and W multiples of the patch, -> the class token
    after the final LayerNorm (N, dim). Defaults are ViT-L/14 with the 37x37 position grid of its 518-pixel
    training."""

    def __init__(self, dim: int = 1024, depth: int = 24, heads: int = 16, hidden: int = 4096, patch: int = 14,
                 grid: int = 37, registers: int = 0):
        super().__init__()
        self.patch, self.grid = patch, grid
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim)) if registers else None
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # used in training only; kept so the file loads whole
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The position embeddings for an (h, w) grid of patches, as the official ``interpolate_pos_encoding``."""
        if h == w == self.grid:
            return self.pos_embed
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        grid = pos[:, 1:].reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        scale = ((h + INTERPOLATE_OFFSET) / self.grid, (w + INTERPOLATE_OFFSET) / self.grid)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        if tuple(grid.shape[-2:]) != (h, w):
            raise ValueError(f"position grid {tuple(grid.shape[-2:])} for {h}x{w} patches")
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)], 1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], 1)
        tokens = tokens + self.position_embedding(h // self.patch, w // self.patch)
        if self.register_tokens is not None:
            tokens = torch.cat([tokens[:, :1], self.register_tokens.expand(b, -1, -1), tokens[:, 1:]], 1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


def preprocess(u8: torch.Tensor) -> torch.Tensor:
    """EDM2's DINOv2 input: uint8 (N, 1 or 3, H, W) -> 224x224 bicubic with antialiasing, / 255, ImageNet-normalised."""
    x = u8.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bicubic", antialias=True) / 255
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def architecture(state: dict[str, torch.Tensor]) -> dict:
    """The backbone's shape from a state dict of the official names (ViT-S/B/L with an MLP; registers or not)."""
    try:
        dim = state["cls_token"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        patch = state["patch_embed.proj.weight"].shape[-1]
        positions = state["pos_embed"].shape[1] - 1
    except (KeyError, ValueError, IndexError):
        if any(".mlp.w12." in k for k in state):
            raise ScorekitError("a DINOv2 ViT-g/14 (SwiGLU) file: use ViT-L/14 (dinov2_vitl14_pretrain.pth), the "
                                "network FD_DINOv2 is defined with") from None
        raise ScorekitError("not a DINOv2 backbone state dict (cls_token, pos_embed, patch_embed.proj, blocks.N.* "
                            "expected)") from None
    grid = math.isqrt(positions)
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    return {"dim": dim, "depth": depth, "heads": dim // 64, "hidden": hidden, "patch": patch, "grid": grid,
            "registers": registers}


def weights_path(path: str | Path | None = None) -> Path:
    chosen = path or os.environ.get(WEIGHTS_ENV)
    if not chosen:
        raise ScorekitError(f"FD_DINOv2 needs local weights: put {WEIGHT_FILE} (facebookresearch/dinov2) on disk and "
                            f"pass --dinov2-weights PATH or set {WEIGHTS_ENV}=PATH (nothing is downloaded)")
    p = Path(chosen)
    if not p.is_file():
        raise ScorekitError(f"{p}: DINOv2 weights not found (expected {WEIGHT_FILE})")
    return p


def load_dinov2(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[DINOv2, dict]:
    """The backbone with the local weights (loaded without executing code), and what the protocol records."""
    from ..checkpoint import safe_torch_load
    from .inception import sha256

    p = weights_path(path)
    state = safe_torch_load(p)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ScorekitError(f"{p}: expected a state dict of tensors, found {type(state).__name__}")
    try:
        arch = architecture(state)
    except ScorekitError as e:
        raise ScorekitError(f"{p}: {e}") from None
    net = DINOv2(**arch)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ScorekitError(f"{p}: tensors do not fit the DINOv2 graph ({str(e).splitlines()[1].strip()})") from None
    info = {"weights_sha256": sha256(p), "weights_file": p.name, **arch}
    return net.to(device).eval().requires_grad_(False), info
