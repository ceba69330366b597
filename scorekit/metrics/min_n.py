"""When a sample-quality number means something: the rule for the smallest N scorekit reports.

* FD (FID, proxy FD) needs at least as many samples as the features have dimensions (Inception 2048,
  the digits proxy 128) and at least ``MIN_IMAGES``: below that the samples' covariance is singular and
  FD is dominated by its small-sample bias (it is biased at every N; compare only at equal N).
* IS needs ``MIN_IMAGES`` images per split; KID and precision/recall need ``MIN_IMAGES`` samples.

Below the rule a command says so and the JSON holds ``null`` for the metric, with the reason under
``too_few_samples`` and the computed value under ``values_below_min_n`` (for rankings at equal N, such
as NCSNv2's 1k-sample checkpoint sweep).
"""

from __future__ import annotations

MIN_IMAGES = 100


def min_n(metric: str, *, feature_dim: int = 0, splits: int = 1) -> int:
    """The smallest number of samples at which ``metric`` is reported."""
    if metric in ("fid", "fd", "proxy_fd"):
        return max(MIN_IMAGES, feature_dim)
    if metric in ("is", "proxy_is"):
        return MIN_IMAGES * max(1, splits)
    return MIN_IMAGES


def too_few(metric: str, n: int, *, feature_dim: int = 0, splits: int = 1) -> str | None:
    """Why ``metric`` of ``n`` samples is not reported, or None when it is."""
    need = min_n(metric, feature_dim=feature_dim, splits=splits)
    if n >= need:
        return None
    if metric in ("fid", "fd", "proxy_fd") and feature_dim >= MIN_IMAGES:
        why = f"fewer samples than the {feature_dim} feature dimensions leave the covariance singular"
    elif metric in ("is", "proxy_is"):
        why = f"IS needs {MIN_IMAGES} images per split"
    else:
        why = f"{metric} needs at least {MIN_IMAGES} samples"
    return f"N = {n} < {need}: {why}; sample at least {need}"


def withhold(values: dict, n: int, reasons: dict[str, str | None]) -> dict:
    """``values`` with each metric that has a reason replaced by None, plus ``too_few_samples`` (the reasons)
    and ``values_below_min_n`` (the computed values) when any was withheld."""
    out = dict(values)
    hidden = {k: r for k, r in reasons.items() if r is not None and k in out}
    if hidden:  # (added to what an earlier call withheld)
        out["values_below_min_n"] = {**out.get("values_below_min_n", {}), **{k: out[k] for k in hidden}}
        out["too_few_samples"] = {**out.get("too_few_samples", {}), **hidden}
        for k in hidden:
            out[k] = None
    return out
