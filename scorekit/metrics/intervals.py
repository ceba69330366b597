"""95% intervals over seeds, for the verdicts the studies and benchmarks give.

A quality figure is the mean over sample seeds; its interval is Student's t: mean +- t(0.975, n - 1) sd / sqrt(n).
A ratio of two such means (a student's FD over its teacher's) gets the delta method on the log scale with Welch's
degrees of freedom: log R +- t(0.975, df) sqrt(s_a^2 / (n_a a^2) + s_b^2 / (n_b b^2)). A target "ratio <= r" is
met only when the interval's upper end is below r, missed only when its lower end is above it, and otherwise
"within noise" (:func:`verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below the mean: use the symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for k in (0, 1):  # the even then the odd term of the fraction
            num = (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)) if k == 0
                   else -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)))
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def t975(df: float) -> float:
    """The 97.5% quantile of Student's t with ``df`` (real, >= 1) degrees of freedom: the t with
    P(|T| > t) = 0.05, i.e. I_x(df / 2, 1 / 2) = 0.05 at x = df / (df + t^2), solved by bisection."""
    if df < 1:
        raise ValueError(f"need at least one degree of freedom, got {df}")
    lo, hi = 0.0, 1.0  # x; I_x increases with x
    for _ in range(64):
        mid = (lo + hi) / 2
        if _betainc(df / 2, 0.5, mid) < 0.05:
            lo = mid
        else:
            hi = mid
    x = (lo + hi) / 2
    return math.sqrt(df * (1 - x) / x)


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd, n


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the 95% t interval of the mean; no interval from one value."""
    mean, sd, n = _mean_sd(values)
    if n < 2:
        return mean, None, None
    half = t975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def ratio_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None, float | None]:
    """(mean(a) / mean(b), low, high): the 95% interval of the ratio of two independent means of positive values
    (the delta method on log R, Welch-Satterthwaite degrees of freedom); no interval unless both have two values."""
    ma, sa, na = _mean_sd(a)
    mb, sb, nb = _mean_sd(b)
    ratio = ma / mb
    if na < 2 or nb < 2:
        return ratio, None, None
    va, vb = (sa / ma) ** 2 / na, (sb / mb) ** 2 / nb
    if va + vb == 0:
        return ratio, ratio, ratio
    df = (va + vb) ** 2 / ((va**2 / (na - 1) if va else 0.0) + (vb**2 / (nb - 1) if vb else 0.0))
    half = t975(max(df, 1.0)) * math.sqrt(va + vb)
    return ratio, ratio * math.exp(-half), ratio * math.exp(half)


def verdict(low: float | None, high: float | None, target: float) -> str:
    """A target "at most ``target``": met when the interval lies below it, missed when above, else within noise."""
    if low is None or high is None:
        return "no interval (one seed)"
    if high <= target:
        return "met"
    if low > target:
        return "missed"
    return "within noise"


def fmt_interval(value: float, low: float | None, high: float | None, digits: int = 2) -> str:
    """``1.14 [1.05, 1.24]``, or the value alone without an interval."""
    if low is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
