"""Sample quality the way the papers measured it: FID, IS, KID and precision/recall against a reference,
with the whole protocol recorded (evaluation.md), and the papers' checkpoint selection."""

from __future__ import annotations

import csv
import datetime
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ScorekitError
from ..metrics.extractors import Extractor
from ..metrics.frechet import feature_stats, frechet_distance, load_stats
from ..metrics.min_n import too_few, withhold
from ..metrics.scores import inception_score, kid, precision_recall, softmax

METRICS = ("fid", "is", "kid", "pr", "fd_dinov2")
KID_SUBSETS, KID_SUBSET_SIZE, KID_SEED, PR_K = 100, 1000, 0, 3  # Binkowski et al.; Kynkaanniemi et al.


@dataclass
class Reference:
    description: str
    n: int
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None  # needed by KID and precision/recall
    labels: np.ndarray | None = None  # class of each reference image (per-class FD), where the data has classes


def reference_from(spec: str, extractor: Extractor, *, split: str = "train", resolution: int | None = None,
                   channels: int | None = None, max_images: int = 0) -> Reference:
    """A statistics file (.npz with mu, sigma: FID only) or DATA (features of its images: every metric)."""
    if spec.endswith(".npz"):
        mu, sigma = load_stats(spec)
        with np.load(spec, allow_pickle=False) as f:
            n = int(f["n"]) if "n" in f else -1
            made_with = str(f["extractor"]) if "extractor" in f else None
        if made_with is not None and made_with != extractor.name:
            raise ScorekitError(f"{spec}: statistics of {made_with}, but the evaluation uses {extractor.name}")
        dim = extractor.info.get("dim")
        if dim is not None and (mu.shape != (dim,) or sigma.shape != (dim, dim)):
            raise ScorekitError(f"{spec}: statistics of {mu.shape[0] if mu.ndim == 1 else mu.shape}-d features, but "
                                f"the {extractor.name} extractor gives {dim}-d features (mu must be ({dim},), sigma "
                                f"({dim}, {dim}))")
        return Reference(f"statistics {spec}", n, mu, sigma)
    from ..data.resolve import load_images

    images, described, labels = load_images(spec, split=split, resolution=resolution, channels=channels,
                                             max_images=max_images, with_labels=True)
    feats, _ = extractor(images)
    mu, sigma = feature_stats(feats)
    return Reference(described, len(feats), mu, sigma, feats, None if labels is None else labels.numpy())


def per_class_metrics(features: np.ndarray, logits: np.ndarray | None, labels: np.ndarray, ref: Reference) -> dict:
    """Class agreement (the fraction of samples the judge assigns to the class asked for, when ``logits`` of a
    judge of these classes are given) and FD per class against the reference images of that class."""
    out: dict = {}
    if logits is not None:
        out["agreement"] = float((logits.argmax(1) == labels).mean())
    per = {}
    for c in np.unique(labels):
        mine = features[labels == c]
        row = {"n": int(len(mine))}
        if logits is not None:
            row["agreement"] = float((logits[labels == c].argmax(1) == c).mean())
        if ref.labels is not None and (ref.labels == c).sum() > 1 and len(mine) > 1:
            theirs = ref.features[ref.labels == c]
            row["fd"] = frechet_distance(*feature_stats(mine), *feature_stats(theirs))
            row["reference_n"] = int(len(theirs))
        per[int(c)] = row
    out["per_class"] = per
    return out


def check_request(metrics: list[str], ref: Reference) -> None:
    """Refuse, before any sampling, metrics that do not exist or that the reference cannot serve."""
    for m in metrics:
        if m not in METRICS:
            raise ScorekitError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")
        if m in ("kid", "pr") and ref.features is None:
            raise ScorekitError(f"{m} needs the reference images' features: pass --ref DATA, not a statistics file")


def compute_metrics(features: np.ndarray, logits: np.ndarray, ref: Reference, metrics: list[str], *,
                    is_splits: int = 10) -> dict:
    """The metrics of sample features against ``ref``; those below the minimum N are withheld
    (:mod:`scorekit.metrics.min_n`)."""
    check_request(metrics, ref)
    out: dict = {}
    if "fid" in metrics:
        out["fid"] = frechet_distance(*feature_stats(features), ref.mu, ref.sigma)
    if "is" in metrics:
        out["is"], out["is_std"] = inception_score(softmax(logits), is_splits)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kid(ref.features, features, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE,
                                         seed=KID_SEED)
    if "pr" in metrics:
        out["precision"], out["recall"] = precision_recall(ref.features, features, PR_K)
    n, dim = len(features), features.shape[1]
    reasons = {"fid": too_few("fid", n, feature_dim=dim), "is": too_few("is", n, splits=is_splits),
               "kid": too_few("kid", n), "precision": too_few("precision/recall", n)}
    reasons.update(is_std=reasons["is"], kid_std=reasons["kid"], recall=reasons["precision"])
    return withhold(out, n, reasons)


def metric_value(values: dict, name: str) -> float | None:
    """A metric's value, also when it was withheld below the minimum N (for rankings at equal N)."""
    v = values.get(name)
    return values.get("values_below_min_n", {}).get(name) if v is None else v


def describe_metrics(values: dict) -> str:
    """``fid 3.17, is 9.46`` with withheld metrics said as such."""
    parts = []
    for k, v in values.items():
        if k in ("too_few_samples", "values_below_min_n", "per_class", "agreement") or k.endswith("_std"):
            continue
        parts.append(f"{k} {v:.4g}" if v is not None else f"{k} not reported ({values['too_few_samples'][k]})")
    return ", ".join(parts)


def extra_judges(extractor: Extractor | None, ref_spec: str, reference, *, hog: bool, dinov2: bool,
                 dinov2_weights: str | None = None, dinov2_ref: str | None = None, device="cpu"
                 ) -> list[tuple[Extractor, Reference]]:
    """The judges whose FD ``eval`` reports beside its metrics, each with its reference (``reference(spec,
    extractor)``): the digits' HOG FD beside the proxy when ``hog`` (with images to compare against), FD_DINOv2
    when asked (against ``dinov2_ref`` statistics, else the reference data)."""
    from ..metrics.extractors import get_extractor

    judges = []
    if hog and extractor is not None and extractor.name == "digits-proxy" and not ref_spec.endswith(".npz"):
        judge = get_extractor("digits-hog")
        judges.append((judge, reference(ref_spec, judge)))
    if dinov2:
        if ref_spec.endswith(".npz") and not dinov2_ref:
            raise ScorekitError(f"--metrics fd_dinov2: --ref {ref_spec} is a statistics file of another extractor; "
                                "give --ref DATA, or --dinov2-ref stats.npz made by `scorekit fid-ref DATA --extractor "
                                "dinov2`")
        judge = get_extractor("dinov2", weights=dinov2_weights, device=device)
        judges.append((judge, reference(dinov2_ref or ref_spec, judge)))
    return judges


def evaluate_denoiser(denoiser, *, n: int, ref: Reference, extractor: Extractor, metrics: list[str], seed: int = 0,
                      batch_size: int = 256, sampler: str | None = None, steps: int | None = None,
                      schedule: str | None = None,
                      is_splits: int = 10, checkpoint: str | None = None, dist=None, progress: bool = False,
                      precision: str | None = None, compile: bool | None = None, guided: dict | None = None,
                      per_class: bool = False, judges: list[tuple[Extractor, Reference]] = (),
                      raw: bool = False) -> dict:
    """Sample n images (sharded over processes), extract features, compute the metrics; return the
    metrics with the full protocol. Every process returns the same dictionary. ``judges``: more extractors, each
    with its reference, whose FD of the same images is reported beside (the digits' HOG FD as ``hog_fd``)."""
    from importlib.metadata import version

    from .generate import generate

    cfg = denoiser.config
    options = {**({"steps": steps} if steps else {}), **({"schedule": schedule} if schedule else {})}
    guided = guided or {}
    used: dict = {}
    images = generate(denoiser, n, seed=seed, batch_size=batch_size, sampler=sampler, options=options,
                      progress=progress, dist=dist, precision=precision, compile=compile, raw=raw, record=used,
                      **guided)
    sampling = {k: v for k, v in used["options"].items() if k != "steps"}  # a searched schedule too
    values, feats, logits = {}, None, None
    if metrics:
        feats, logits = extractor(images)
        values = compute_metrics(feats, logits, ref, metrics, is_splits=is_splits)
    for judge, judge_ref in judges:
        key = JUDGE_KEYS.get(judge.name, f"{judge.name}_fd")
        judge_feats, _ = judge(images)
        values[key] = frechet_distance(*feature_stats(judge_feats), judge_ref.mu, judge_ref.sigma)
        values = withhold(values, n, {key: too_few("fd", n, feature_dim=judge_feats.shape[1])})
    if per_class and guided and extractor is not None:  # judge: the proxy's classes, else the guidance classifier
        from ..model.guidance import classify

        judge = logits if extractor.name == "digits-proxy" else (
            classify(guided["classifier"], images) if guided.get("classifier") is not None else None)
        values.update(per_class_metrics(feats, judge, guided["labels"].numpy(), ref))
    return {
        "metrics": values,
        "protocol": {
            "n": n, "seed": seed, "per_image_seed": "image i uses SeedSequence([seed, i])",
            "reference": {"description": ref.description, "n": ref.n} if ref is not None else None,
            "extractor": extractor.info if extractor is not None else None,
            "is_splits": is_splits if "is" in metrics else None,
            "judges": [{"extractor": j.info, "reference": {"description": r.description, "n": r.n}}
                       for j, r in judges] or None,
            "kid": {"subsets": KID_SUBSETS, "subset_size": min(KID_SUBSET_SIZE, n, len(ref.features)), "seed": KID_SEED,
                    "kernel": "(x.y/d + 1)^3"} if "kid" in metrics else None,
            "pr": {"k": PR_K} if "pr" in metrics else None,
            "sampler": used["sampler"], "steps": steps or cfg.sampling.steps or "sampler default",
            "sampler_options": sampling, "on_values": used["on_values"],
            "checkpoint": checkpoint, "checkpoint_step": getattr(denoiser, "checkpoint_step", None),
            "ema": getattr(denoiser, "uses_ema", None), "processes": dist.world if dist is not None else 1,
            "batch_size": batch_size, "precision": precision or cfg.sampling.precision,
            "classes": _class_counts(guided["labels"]) if guided else None,
            "guidance": guided.get("guidance") if guided else None,
            "classifier_scale": guided.get("classifier_scale") if guided else None,
            "scorekit": version("scorekit"), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        },
    }


def write_sweep(csv_path: Path, png_path: Path, rows: list[dict], metric: str, n: int | None = None) -> dict:
    """CSV of every checkpoint's metrics and a PNG of ``metric`` against the step with the best marked."""
    from ..images import atomic_write_bytes
    from .plots import figure

    keys = ["step"] + sorted({k for r in rows for k in r if k != "step"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    higher_better = metric in ("is", "precision", "recall")
    valid = [r for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
    if not valid:
        raise ScorekitError(f"no checkpoint has a finite {metric}")
    best = (max if higher_better else min)(valid, key=lambda r: r[metric])
    with figure(png_path, size=(7, 4)) as ax:
        ax.plot([r["step"] for r in valid], [r[metric] for r in valid], "o-")
        ax.plot([best["step"]], [best[metric]], "r*", markersize=16, label=f"best: step {best['step']}")
        at_n = f" ({n} samples per checkpoint)" if n else ""
        ax.set(xlabel="training step", ylabel=metric.upper(), title=f"{metric.upper()} against the training step{at_n}")
        ax.legend()
        ax.grid(alpha=0.3)
    return best


class FrechetMeter:
    """FD of samples against the data's reference split: with the digits proxy for 8x8 grey digits (against
    the test digits, as every digits figure in scorekit), with Inception otherwise (against the training
    split, as the papers measured). Used by the studies and the schedule search. ``meter(images)`` is the first
    judge's FD; ``meter.all(images)`` every judge's, by name: on the digits with the automatic extractor the
    proxy and the second judge, the pixels-and-gradients HOG FD (:mod:`scorekit.metrics.hog`)."""

    def __init__(self, cfg, *, extractor: str = "auto", weights: str | None = None, device: str = "cpu"):
        from ..data.sources import build_source
        from ..metrics.extractors import get_extractor

        shape = (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
        self.extractor = get_extractor(extractor, images_shape=shape, weights=weights, device=device)
        split = "test" if cfg.data.dataset == "digits" else "train"
        src = build_source(cfg.data, split)
        images = src.images if src.images is not None else torch.stack([src[i] for i in range(len(src))])
        extractors = [self.extractor]
        if self.extractor.name == "digits-proxy" and extractor == "auto":
            extractors.append(get_extractor("digits-hog"))
        self.judges: list[tuple[str, Extractor, Reference]] = []
        for ext in extractors:
            feats, _ = ext(images)
            ref = Reference(f"{cfg.data.dataset} {split} split", len(feats), *feature_stats(feats), feats)
            self.judges.append((JUDGE_NAMES.get(ext.name, "FID"), ext, ref))
        self.name, _, self.ref = self.judges[0]
        self.names = [name for name, _, _ in self.judges]

    def __call__(self, images_u8: torch.Tensor) -> float:
        feats, _ = self.extractor(images_u8)
        return frechet_distance(*feature_stats(feats), self.ref.mu, self.ref.sigma)

    def all(self, images_u8: torch.Tensor) -> dict[str, float]:
        """Every judge's FD of the same images, by name (the first is ``meter(images)``)."""
        out = {}
        for name, ext, ref in self.judges:
            feats, _ = ext(images_u8)
            out[name] = frechet_distance(*feature_stats(feats), ref.mu, ref.sigma)
        return out

    def describe(self) -> dict:
        return {"metric": self.name, "extractor": self.extractor.info, "reference": self.ref.description,
                "reference_n": self.ref.n,
                "judges": [{"metric": name, "extractor": ext.info} for name, ext, _ in self.judges]}


JUDGE_NAMES = {"digits-proxy": "proxy FD", "digits-hog": "HOG FD"}
JUDGE_KEYS = {"digits-hog": "hog_fd", "dinov2": "fd_dinov2"}  # a judge's metric in eval's JSON


def _class_counts(labels) -> dict[str, int]:
    """The classes drawn, as {class: number of samples} (image i draws labels[i], a repeating cycle)."""
    values, counts = labels.unique(return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}
