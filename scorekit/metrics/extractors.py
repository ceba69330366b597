"""Feature extractors behind one interface: uint8 (N, C, H, W) in, float64 features and logits out."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ScorekitError

EXTRACTORS = ("auto", "inception", "digits-proxy", "digits-hog", "dinov2")


class Extractor:
    """``extractor(images_u8) -> (features (N, D), logits (N, K))``; ``info`` describes it for protocols."""

    name = "?"

    def __init__(self, batch_size: int = 200):
        self.batch_size = batch_size
        self.info: dict = {"name": self.name}

    def _forward(self, u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        feats, logits = [], []
        for i in range(0, len(images), self.batch_size):
            f, lg = self._forward(images[i:i + self.batch_size])
            feats.append(f.double().cpu().numpy())
            logits.append(lg.double().cpu().numpy())
        return np.concatenate(feats), np.concatenate(logits)


class DigitsProxy(Extractor):
    """The digits classifier of :mod:`scorekit.metrics.proxy`: 128-d features, 10 logits, 8x8 grey."""

    name = "digits-proxy"

    def __init__(self, batch_size: int = 1024):
        super().__init__(batch_size)
        from .proxy import FEATURE_DIM, trained_classifier

        self.net = trained_classifier()
        self.info.update(dim=FEATURE_DIM, classes=10, resize="none (8x8 grey digits)",
                         weights="trained deterministically on the digits training split (seed 0)")

    def _forward(self, u8):
        if u8.shape[1:] != (1, 8, 8):
            raise ScorekitError(f"the digits proxy takes 8x8 grey images, got {tuple(u8.shape[1:])}")
        h = self.net.features(u8.cpu())
        return h, self.net.head(h)


class DigitsHOG(Extractor):
    """The second digits judge (:mod:`scorekit.metrics.hog`): 96 features of pixels and gradient orientations, no
    logits (no IS), 8x8 grey; nothing trained."""

    name = "digits-hog"

    def __init__(self, batch_size: int = 4096):
        super().__init__(batch_size)
        from .hog import FEATURE_DIM

        self.info.update(dim=FEATURE_DIM, classes=0, resize="none (8x8 grey digits)",
                         weights="none: the pixels (grey / 16) and 8-bin HOG over 2x2 cells of 4x4 pixels")

    def _forward(self, u8):
        from .hog import hog_features

        if u8.shape[1:] != (1, 8, 8):
            raise ScorekitError(f"the digits HOG judge takes 8x8 grey images, got {tuple(u8.shape[1:])}")
        return torch.from_numpy(hog_features(u8)), torch.zeros(len(u8), 0, dtype=torch.float64)


class Inception(Extractor):
    """TF Inception-v3 2015-12-05: pool3 (2048-d) and the 1008 logits without bias; grey images are
    repeated to RGB."""

    name = "inception-v3-tf-2015-12-05"

    def __init__(self, weights: str | None = None, device: str | torch.device = "cpu", batch_size: int = 200, *,
                 verify: bool = True):
        super().__init__(batch_size)
        from .inception import load_inception

        self.device = torch.device(device)
        self.net, weights_info = load_inception(weights, self.device, verify=verify)
        self.info.update(dim=2048, classes=1008, resize="tf1-bilinear to 299", **weights_info)

    def _forward(self, u8):
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        return self.net(u8.to(self.device))


class DINOv2Features(Extractor):
    """DINOv2 (:mod:`scorekit.metrics.dinov2`): the class token (1024-d for ViT-L/14) of EDM2's preprocessing; no
    logits. Grey images are repeated to RGB."""

    name = "dinov2"

    def __init__(self, weights: str | None = None, device: str | torch.device = "cpu", batch_size: int = 64):
        super().__init__(batch_size)
        from .dinov2 import RESOLUTION, load_dinov2

        self.device = torch.device(device)
        self.net, weights_info = load_dinov2(weights, self.device)
        self.info.update(resize=f"bicubic with antialiasing to {RESOLUTION} (EDM2), ImageNet mean / std",
                         classes=0, **weights_info)

    def _forward(self, u8):
        from .dinov2 import preprocess

        feats = self.net(preprocess(u8.to(self.device)))
        return feats, torch.zeros(len(u8), 0, device=feats.device)


def get_extractor(name: str = "auto", *, images_shape: tuple[int, ...] | None = None, weights: str | None = None,
                  device: str | torch.device = "cpu", verify: bool = True) -> Extractor:
    """``auto``: the digits proxy for 8x8 grey images, Inception otherwise (``verify``: its weights' sha256); the
    digits' second judge is ``digits-hog``."""
    if name == "auto":
        name = "digits-proxy" if images_shape is not None and tuple(images_shape) == (1, 8, 8) else "inception"
    if name == "digits-proxy":
        return DigitsProxy()
    if name == "digits-hog":
        return DigitsHOG()
    if name == "inception":
        return Inception(weights, device, verify=verify)
    if name == "dinov2":
        return DINOv2Features(weights, device)
    raise ScorekitError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
