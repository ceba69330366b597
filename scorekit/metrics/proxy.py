"""An offline stand-in for Inception on the digits: a small classifier trained deterministically.

Its 128-d penultimate features define a Frechet distance between generated digits and the held-out
test digits ("proxy FD"), and its class probabilities an Inception-Score analogue. The real-vs-real
floor, the FD of as many real training digits, tells what a perfect model would score at that N.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .frechet import feature_stats, frechet_distance
from .scores import inception_score


class DigitsClassifier(nn.Module):
    """conv(32) -> conv(64) -> maxpool -> dense(128) [features] -> dense(10), on 8x8 grey digits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, 128)
        self.head = nn.Linear(128, 10)

    def features(self, u8: torch.Tensor) -> torch.Tensor:
        x = u8.float() / 255.0
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, u8: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(u8))


CACHE_ENV = "SCOREKIT_CACHE"  # folder of the trained proxy classifier (default ~/.cache/scorekit)


def _cache_path(seed: int, epochs: int) -> Path:
    """Where the classifier trained with these settings, by this code and this torch, is kept."""
    h = hashlib.sha256()
    for part in (_SOURCE, torch.__version__, seed, epochs):
        h.update(str(part).encode())
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scorekit")
    return root / f"digits-proxy-{h.hexdigest()[:16]}.safetensors"


@functools.lru_cache(maxsize=1)
def trained_classifier(seed: int = 0, epochs: int = 40) -> DigitsClassifier:
    """Train on the digits training split: fixed seed, fixed batch order, CPU; a few seconds. The weights are kept
    (safetensors) under $SCOREKIT_CACHE or ~/.cache/scorekit, keyed by a hash of this code, torch's version and the
    settings, so that later processes load them instead of training again; an unwritable cache is skipped."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..checkpoint import atomic_save_file
    from ..errors import WriteError

    path = _cache_path(seed, epochs)
    if path.is_file():
        try:
            net = DigitsClassifier()
            net.load_state_dict(load_file(str(path)))
            return net.eval().requires_grad_(False)
        except (OSError, SafetensorError, RuntimeError):
            pass  # a damaged cache: train again and replace it
    net = _train(seed, epochs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_file(path, {k: v.contiguous() for k, v in net.state_dict().items()}, {"seed": str(seed)})
    except (OSError, WriteError):
        pass
    return net


def _train(seed: int, epochs: int) -> DigitsClassifier:
    from ..data.sources import digits

    data = digits("train")
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        net = DigitsClassifier()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(len(data.images), generator=g)
            for i in range(0, len(perm), 128):
                idx = perm[i:i + 128]
                loss = F.cross_entropy(net(data.images[idx]), data.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval().requires_grad_(False)


_SOURCE = inspect.getsource(DigitsClassifier) + inspect.getsource(_train)  # the cache's key: this code


@torch.no_grad()
def features_and_probs(u8: torch.Tensor, net: DigitsClassifier | None = None) -> tuple[np.ndarray, np.ndarray]:
    net = net or trained_classifier()
    u8 = u8.cpu()
    if u8.shape[1:] != (1, 8, 8):
        raise ValueError(f"the digits proxy needs uint8 images of shape (N, 1, 8, 8), got {tuple(u8.shape)}")
    feats, probs = [], []
    for i in range(0, len(u8), 1024):
        h = net.features(u8[i:i + 1024])
        feats.append(h.double().numpy())
        probs.append(torch.softmax(net.head(h), dim=1).double().numpy())
    return np.concatenate(feats), np.concatenate(probs)


FEATURE_DIM = 128


def proxy_metrics(samples_u8: torch.Tensor, floor_seed: int = 0, labels: torch.Tensor | None = None) -> dict:
    """Both digits judges: the proxy FD and the HOG FD (:mod:`scorekit.metrics.hog`) of the samples against the
    test digits, each with its real-vs-real floor at the same N (that many training digits against the test
    digits), and the IS analogue of samples and of real digits.

    Below the rule of :mod:`scorekit.metrics.min_n` (proxy FD: N >= 128, HOG FD: N >= 100, IS: N >= 100) a value
    is None, with the reason in ``too_few_samples`` and the computed value in ``values_below_min_n``. With the
    ``labels`` asked for, ``agreement`` is the fraction of samples the classifier assigns to them."""
    from ..data.sources import digits
    from .hog import FEATURE_DIM as HOG_DIM
    from .hog import hog_features
    from .min_n import too_few, withhold

    test, train = digits("test"), digits("train")
    f_test, _ = features_and_probs(test.images)
    f_s, p_s = features_and_probs(samples_u8)
    mu_t, s_t = feature_stats(f_test)
    fd = frechet_distance(*feature_stats(f_s), mu_t, s_t)
    n = min(len(samples_u8), len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(floor_seed))[:n]
    f_r, p_r = features_and_probs(train.images[idx])
    floor = frechet_distance(*feature_stats(f_r), mu_t, s_t)
    hog_test = feature_stats(hog_features(test.images))
    hog_fd = frechet_distance(*feature_stats(hog_features(samples_u8)), *hog_test)
    hog_floor = frechet_distance(*feature_stats(hog_features(train.images[idx])), *hog_test)
    values = {"proxy_fd": fd, "proxy_fd_floor": floor, "hog_fd": hog_fd, "hog_fd_floor": hog_floor,
              "proxy_is": inception_score(p_s, 1)[0], "proxy_is_real": inception_score(p_r, 1)[0],
              "n": int(len(samples_u8))}
    if labels is not None:
        values["agreement"] = float((p_s.argmax(1) == labels.cpu().numpy()).mean())
    n = len(samples_u8)
    fd_reason = too_few("proxy_fd", n, feature_dim=FEATURE_DIM)
    hog_reason = too_few("fd", n, feature_dim=HOG_DIM)
    is_reason = too_few("proxy_is", n)
    return withhold(values, n, {"proxy_fd": fd_reason, "proxy_fd_floor": fd_reason, "hog_fd": hog_reason,
                                "hog_fd_floor": hog_reason, "proxy_is": is_reason, "proxy_is_real": is_reason})
