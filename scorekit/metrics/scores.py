"""Inception Score, KID and precision / recall from features (float64, numpy)."""

from __future__ import annotations

import numpy as np


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of the rows; mean and std over the splits (1 split
    reproduces DDPM's number, 10 is the convention)."""
    scores = []
    for part in np.array_split(np.asarray(probs, np.float64), splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(py, 1e-30, None)))).sum(1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(real: np.ndarray, fake: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: the unbiased MMD^2 averaged over seeded random subsets (mean, std)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least 2 real and 2 generated feature vectors")
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                          fake[rng.choice(len(fake), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def _pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0, None)


def knn_radii(x: np.ndarray, k: int = 3, block: int = 2048) -> np.ndarray:
    """Distance from each row to its k-th nearest other row."""
    out = np.empty(len(x))
    for i in range(0, len(x), block):
        d = _pairwise_sq(x[i:i + block], x)
        out[i:i + block] = np.sqrt(np.partition(d, k, axis=1)[:, k])  # index 0 is the point itself
    return out


def _coverage(points: np.ndarray, manifold: np.ndarray, radii: np.ndarray, block: int = 2048) -> float:
    inside = np.zeros(len(points), bool)
    for i in range(0, len(points), block):
        d = np.sqrt(_pairwise_sq(points[i:i + block], manifold))
        inside[i:i + block] = (d <= radii[None]).any(1)
    return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the manifold of a set is the union of
    balls around its points reaching their k-th nearest neighbour; precision is the fraction of
    generated points inside the real manifold, recall the fraction of real points inside the generated."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return _coverage(fake, real, knn_radii(real, k)), _coverage(real, fake, knn_radii(fake, k))
