"""Frechet distance between Gaussians fitted to features (FID's formula), in float64.

Statistics are stored as ``.npz`` with keys ``mu`` and ``sigma``, the format of the TTUR, EDM and
clean-fid reference files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError


class RunningStats:
    """Streaming mean and (unbiased) covariance of feature batches, accumulated in float64."""

    def __init__(self, dim: int | None = None):
        self.n = 0
        self.sum = None if dim is None else np.zeros(dim)
        self.outer = None if dim is None else np.zeros((dim, dim))

    def update(self, features: np.ndarray | torch.Tensor) -> None:
        f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else features
        f = np.asarray(f, dtype=np.float64).reshape(len(f), -1)
        if self.sum is None:
            self.sum, self.outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        self.n += len(f)
        self.sum += f.sum(0)
        self.outer += f.T @ f

    @property
    def mu(self) -> np.ndarray:
        return self.sum / self.n

    @property
    def sigma(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError("need at least 2 feature vectors for a covariance")
        mu = self.mu
        return (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the trace of the root taken from the eigenvalues of
    the symmetric PSD matrix sqrt(S1) S2 sqrt(S1), which has the same spectrum as S1 S2."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r = _sqrt_psd(s1)
    m = r @ s2 @ r
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    rs = RunningStats()
    rs.update(features)
    return rs.mu, rs.sigma


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **extra) -> None:
    from ..images import save_npz

    save_npz(path, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64), **extra)


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``mu`` and ``sigma`` from an .npz (TTUR / EDM / clean-fid reference statistics)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: statistics file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "mu" not in f or "sigma" not in f:
                raise DataError(f"{path}: expected arrays 'mu' and 'sigma', found {', '.join(f.files)}")
            mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
    except (ValueError, OSError, TypeError) as e:
        raise DataError(f"{path}: not a readable .npz statistics file ({e})") from None
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise DataError(f"{path}: mu must be a vector and sigma its square covariance, got shapes {mu.shape} and "
                        f"{sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DataError(f"{path}: mu or sigma holds non-finite values")
    return mu, sigma
