"""The TF Inception-v3 graph of 2015-12-05 that FID and IS are defined with, in PyTorch.

Same layers, names and TensorFlow quirks as the PyTorch ports of its weights (pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``, torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``):
average pools that ignore padding, a max pool in the last block, BatchNorm eps 1e-3, a 1008-way head.
Input is uint8 RGB of any size, resized to 299 with TF1's bilinear resize (align_corners=False, no half
pixel offset) and scaled by (x - 128) / 128. Weights are never downloaded: give a local file whose
sha256 starts with 6726825d (the hash prefix in both files' published names).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ScorekitError

WEIGHTS_ENV = "SCOREKIT_INCEPTION_WEIGHTS"
SHA256_PREFIX = "6726825d"
WEIGHT_FILES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 ``resize_bilinear`` (align_corners=False, half_pixel_centers=False) in its arithmetic order:
    src = dst * in/out, top = l + (r - l) dx, bottom likewise, out = top + (bottom - top) dy."""
    def taps(n_in: int):
        scale = torch.tensor(n_in / size, dtype=torch.float32)
        src = torch.arange(size, dtype=torch.float32) * scale
        lo = src.floor()
        hi = torch.minimum(src.ceil(), torch.tensor(n_in - 1.0))
        return lo.long().to(x.device), hi.long().to(x.device), (src - lo).to(x.device, x.dtype)

    y0, y1, dy = taps(x.shape[-2])
    x0, x1, dx = taps(x.shape[-1])
    top_l, top_r = x[..., y0, :][..., x0], x[..., y0, :][..., x1]
    bot_l, bot_r = x[..., y1, :][..., x0], x[..., y1, :][..., x1]
    top = top_l + (top_r - top_l) * dx
    bottom = bot_l + (bot_r - bot_l) * dx
    return top + (bottom - top) * dy[:, None]


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF ignores the padding


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool, kernel_size=1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """``last``: the final block of the TF graph pools with max instead of average."""

    def __init__(self, cin: int, last: bool):
        super().__init__()
        self.last = last
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.last else _avg3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3), self.branch3x3dbl_3a(d),
                          self.branch3x3dbl_3b(d), self.branch_pool(pool)], 1)


class InceptionV3TF(nn.Module):
    """uint8 (N, 3, H, W) -> (pool3 features (N, 2048), logits without bias (N, 1008))."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, last=False), InceptionE(2048, last=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if u8.dtype != torch.uint8 or u8.ndim != 4 or u8.shape[1] != 3:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {u8.dtype} {tuple(u8.shape)}")
        x = tf1_resize_bilinear(u8.float(), 299)
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        features = x.mean(dim=(2, 3))
        return features, features @ self.fc.weight.T


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_path(path: str | Path | None = None) -> Path:
    """The local weights file: ``path`` or $SCOREKIT_INCEPTION_WEIGHTS; a clear error if absent."""
    chosen = path or os.environ.get(WEIGHTS_ENV)
    if not chosen:
        raise ScorekitError(f"FID/IS/KID with Inception need local weights: put {WEIGHT_FILES[0]} (pytorch-fid) or "
                            f"{WEIGHT_FILES[1]} (torch-fidelity) on disk and pass --inception-weights PATH or set "
                            f"{WEIGHTS_ENV}=PATH (nothing is downloaded)")
    p = Path(chosen)
    if not p.is_file():
        raise ScorekitError(f"{p}: Inception weights not found (expected {WEIGHT_FILES[0]} or {WEIGHT_FILES[1]})")
    return p


def load_inception(path: str | Path | None = None, device: str | torch.device = "cpu", *, verify: bool = True
                   ) -> tuple[InceptionV3TF, dict]:
    """The network with the local weights, and ``{"weights_sha256", "verified", "weights_file"}``.

    pytorch-fid's and torch-fidelity's files hold the same tensors under the same names (torch-fidelity's
    without BatchNorm's ``num_batches_tracked``); both load. A file whose sha256 does not start with
    6726825d is refused unless ``verify`` is False (``--inception-unverified``), and then recorded as
    unverified with its full sha256.
    """
    from ..checkpoint import safe_torch_load

    p = weights_path(path)
    digest = sha256(p)
    verified = digest.startswith(SHA256_PREFIX)
    if verify and not verified:
        raise ScorekitError(f"{p}: sha256 starts with {digest[:8]}, expected {SHA256_PREFIX} (the TF Inception "
                            f"2015-12-05 port: {' or '.join(WEIGHT_FILES)}); pass --inception-unverified to use "
                            f"it anyway (the protocol then records its sha256 and verified: false)")
    state = safe_torch_load(p)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ScorekitError(f"{p}: expected a state dict of tensors, found {type(state).__name__}")
    net = InceptionV3TF()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ScorekitError(f"{p}: tensors do not fit the Inception graph ({str(e).splitlines()[1].strip()})"
                            ) from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.startswith("AuxLogits")]
    if missing or unexpected:
        raise ScorekitError(f"{p}: keys do not match the Inception graph (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    info = {"weights_sha256": digest, "verified": verified, "weights_file": p.name}
    return net.to(device).eval().requires_grad_(False), info
