"""NCSNv2's techniques for choosing the noise (Song & Ermon 2020, Sec. 3-4): sigma_1 (technique 1), the
number of levels (technique 2) and the Langevin step size (technique 4) from the data alone."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


def max_pairwise_distance(x: torch.Tensor, block: int = 2048) -> float:
    """Technique 1: the exact maximum Euclidean distance between any two rows of ``x`` (N, D).

    Blocks of squared distances ||a||^2 + ||b||^2 - 2 a.b are computed with float32 matrix products; every
    pair that could be the maximum given float32's error is then re-measured exactly in float64.
    """
    x = x.reshape(x.shape[0], -1)
    if x.shape[0] < 2:
        return 0.0
    x32 = x.float()
    sq = (x32 * x32).sum(1)
    tol = 1e-4 * float(sq.max()) * 4 + 1e-6  # bound on float32 rounding of a squared distance
    best, candidates = -math.inf, []
    n = x.shape[0]
    for i in range(0, n, block):
        for j in range(i, n, block):
            d2 = sq[i:i + block, None] + sq[None, j:j + block] - 2 * x32[i:i + block] @ x32[j:j + block].T
            m = float(d2.max())
            if m >= best - tol:
                best = max(best, m)
                ii, jj = torch.nonzero(d2 >= best - tol, as_tuple=True)
                candidates = [c for c in candidates if c[0] >= best - tol]
                candidates += [(float(d2[a, b]), i + int(a), j + int(b)) for a, b in zip(ii[:256], jj[:256])]
    x64 = x.double()
    return max(float((x64[a] - x64[b]).norm()) for _, a, b in candidates)


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def technique2_value(gamma: float, dim: int) -> float:
    """Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma); technique 2 wants ~0.5."""
    a = math.sqrt(2 * dim) * (gamma - 1)
    return _phi(a + 3 * gamma) - _phi(a - 3 * gamma)


def _bisect(f, lo: float, hi: float, iters: int = 200) -> float:
    flo = f(lo)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if (f(mid) > 0) == (flo > 0):
            lo, flo = mid, f(mid)
        else:
            hi = mid
    return 0.5 * (lo + hi)


def gamma_for(dim: int, target: float = 0.5) -> float:
    """The ratio gamma = sigma_{i-1}/sigma_i at which technique 2's expression equals ``target``."""
    return _bisect(lambda g: technique2_value(g, dim) - target, 1.0 + 1e-12, 10.0)


def num_levels(sigma_begin: float, sigma_end: float, dim: int, target: float = 0.5) -> int:
    """Technique 2: the number of geometric levels from sigma_1 to sigma_L with ratio at most gamma_for(dim)."""
    return math.ceil(math.log(sigma_begin / sigma_end) / math.log(gamma_for(dim, target))) + 1


def technique4_value(eps: float, n_steps: int, gamma: float, sigma_end: float) -> float:
    """(1 - eps/s^2)^(2T) (gamma^2 - 2 eps / (s^2 - s^2 (1 - eps/s^2)^2)) + 2 eps / (s^2 - s^2 (1 - eps/s^2)^2),
    s = sigma_L; technique 4 wants ~1."""
    s2 = sigma_end**2
    r = 1.0 - eps / s2
    c = 2 * eps / (s2 - s2 * r * r)
    return r ** (2 * n_steps) * (gamma * gamma - c) + c


def step_size_for(n_steps: int, gamma: float, sigma_end: float, target: float = 1.0) -> float:
    """Technique 4: the eps (step_lr) that brings the expression closest to ``target`` for T steps per level.

    The expression starts at gamma^2 > 1 for eps -> 0, has one minimum, and rises to 2 as eps -> sigma_L^2;
    for the papers' settings the minimum lies above 1, and the configs' step_lr is that minimiser
    (CIFAR-10: 6.18e-6 against the config's 6.2e-6). If the minimum falls below ``target``, the smaller
    eps where the expression crosses it is returned.
    """
    s2 = sigma_end**2

    def f(log_eps: float) -> float:
        return technique4_value(math.exp(log_eps), n_steps, gamma, sigma_end)

    lo, hi = math.log(s2 * 1e-9), math.log(s2 * (1 - 1e-12))
    invphi = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(200):  # golden-section search for the minimum in log(eps)
        c, d = b - invphi * (b - a), a + invphi * (b - a)
        if f(c) < f(d):
            b = d
        else:
            a = c
    best = 0.5 * (a + b)
    if f(best) >= target:
        return math.exp(best)
    return math.exp(_bisect(lambda le: f(le) - target, lo, best))


@dataclass
class NoisePlan:
    dim: int
    max_distance: float
    sigma_begin: float
    sigma_end: float
    num_levels: int
    gamma: float
    technique2: float
    n_steps_each: int
    step_lr: float
    technique4: float

    def as_dict(self) -> dict:
        return asdict(self)


def plan_noise(data: torch.Tensor, *, sigma_end: float = 0.01, n_steps_each: int = 5) -> NoisePlan:
    """All three techniques for a dataset (N, ...) already scaled to the model's range ([0, 1] for NCSN)."""
    from ..errors import ScorekitError

    if len(data) < 2:
        raise ScorekitError(f"planning the noise needs at least 2 images, got {len(data)}")
    dim = data[0].numel()
    sigma_begin = max_pairwise_distance(data)
    if not 0 < sigma_end < sigma_begin:
        raise ScorekitError(f"sigma_end {sigma_end:g}: must be in (0, sigma_1) = (0, {sigma_begin:.4g}), sigma_1 being "
                            "the largest distance between two images")
    L = num_levels(sigma_begin, sigma_end, dim)
    gamma = (sigma_begin / sigma_end) ** (1.0 / (L - 1))
    eps = step_size_for(n_steps_each, gamma, sigma_end)
    return NoisePlan(dim=dim, max_distance=sigma_begin, sigma_begin=sigma_begin, sigma_end=sigma_end, num_levels=L,
                     gamma=gamma, technique2=technique2_value(gamma, dim), n_steps_each=n_steps_each, step_lr=eps,
                     technique4=technique4_value(eps, n_steps_each, gamma, sigma_end))
