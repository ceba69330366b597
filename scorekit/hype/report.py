"""HYPE_inf from the judgments of a study, with bootstrap confidence intervals (Zhou et al. 2019).

HYPE_inf = 100 x (fakes judged real + reals judged fake) / all judgments; the Fakes Error is the
percentage of fakes judged real, the Reals Error that of reals judged fake. 50% means people cannot
tell samples from data. Intervals come from the bootstrap over raters and images at once, as the HYPE
paper does: each replicate draws raters with replacement and images with replacement, and a judgment
counts with the product of its rater's and its image's multiplicities. Pure functions of arrays: this
module does not import the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Judgments:
    """Test-phase judgments as parallel arrays: rater index, image index, is the image fake, was it wrong."""

    rater: np.ndarray
    image: np.ndarray
    fake: np.ndarray
    wrong: np.ndarray

    def __len__(self) -> int:
        return len(self.wrong)

    @classmethod
    def from_rows(cls, rows: list[dict]) -> Judgments:
        raters = {t: i for i, t in enumerate(dict.fromkeys(r["token"] for r in rows))}
        images = {t: i for i, t in enumerate(dict.fromkeys(r["image_id"] for r in rows))}
        return cls(np.array([raters[r["token"]] for r in rows], dtype=np.int64),
                   np.array([images[r["image_id"]] for r in rows], dtype=np.int64),
                   np.array([r["kind"] == "fake" for r in rows], dtype=bool),
                   np.array([not r["correct"] for r in rows], dtype=bool))


def _rates(w: np.ndarray, fake: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """(HYPE, fakes error, reals error) in % for weight rows ``w`` (B, J); NaN where a part has no weight."""
    with np.errstate(invalid="ignore", divide="ignore"):
        all_ = (w * wrong).sum(-1) / w.sum(-1)
        fakes = (w * (wrong & fake)).sum(-1) / (w * fake).sum(-1)
        reals = (w * (wrong & ~fake)).sum(-1) / (w * ~fake).sum(-1)
    return 100 * np.stack([all_, fakes, reals], -1)


def hype_scores(j: Judgments) -> dict[str, float]:
    hype, fakes, reals = _rates(np.ones((1, len(j))), j.fake, j.wrong)[0]
    return {"hype": float(hype), "fakes_error": float(fakes), "reals_error": float(reals)}


def bootstrap(j: Judgments, n_boot: int = 2000, seed: int = 0, level: float = 0.95, chunk: int = 250) -> dict:
    """Percentile intervals and standard deviations of the three scores over ``n_boot`` replicates that
    resample raters and images with replacement."""
    rng = np.random.default_rng(seed)
    n_r, n_i = int(j.rater.max()) + 1, int(j.image.max()) + 1
    reps = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        cr = np.stack([np.bincount(rng.integers(0, n_r, n_r), minlength=n_r) for _ in range(b)])
        ci = np.stack([np.bincount(rng.integers(0, n_i, n_i), minlength=n_i) for _ in range(b)])
        reps.append(_rates(cr[:, j.rater] * ci[:, j.image], j.fake, j.wrong))
    reps = np.concatenate(reps)
    lo, hi = np.nanpercentile(reps, [50 * (1 - level), 50 * (1 + level)], axis=0)
    std = np.nanstd(reps, axis=0, ddof=1)
    names = ("hype", "fakes_error", "reals_error")
    return {"level": level, "replicates": n_boot, "seed": seed,
            "ci": {k: [float(lo[i]), float(hi[i])] for i, k in enumerate(names)},
            "std": {k: float(std[i]) for i, k in enumerate(names)}}


def summarize(rows: list[dict], *, threshold: float = 0.5, n_boot: int = 2000, seed: int = 0) -> dict:
    """The whole report from the study's answer rows (see :func:`scorekit.hype.study.judgments`): raters whose
    tutorial accuracy is below ``threshold`` are excluded; per-rater and per-image counts; scores with
    their bootstrap intervals."""
    per_rater: dict[str, dict] = {}
    for r in rows:
        p = per_rater.setdefault(r["token"], {"rater": r["label"], "tutorial": 0, "tutorial_correct": 0,
                                              "judged": 0, "wrong": 0})
        if r["phase"] == "tutorial":
            p["tutorial"] += 1
            p["tutorial_correct"] += int(r["correct"])
        else:
            p["judged"] += 1
            p["wrong"] += int(not r["correct"])
    for p in per_rater.values():
        p["tutorial_accuracy"] = p["tutorial_correct"] / p["tutorial"] if p["tutorial"] else None
        p["excluded"] = p["tutorial_accuracy"] is not None and p["tutorial_accuracy"] < threshold
        p["error_rate"] = p["wrong"] / p["judged"] if p["judged"] else None
    kept = [r for r in rows if r["phase"] == "test" and not per_rater[r["token"]]["excluded"]]
    per_image: dict[str, dict] = {}
    for r in kept:
        p = per_image.setdefault(r["image_id"], {"image": r["image_id"], "kind": r["kind"], "judged": 0, "wrong": 0})
        p["judged"] += 1
        p["wrong"] += int(not r["correct"])
    out = {"judgments": len(kept), "raters": sum(not p["excluded"] and p["judged"] > 0 for p in per_rater.values()),
           "excluded_raters": [p["rater"] for p in per_rater.values() if p["excluded"]],
           "exclusion_rule": f"tutorial accuracy < {threshold:g}", "per_rater": list(per_rater.values()),
           "per_image": list(per_image.values())}
    if kept:
        j = Judgments.from_rows(kept)
        out.update(hype_scores(j))
        out["bootstrap"] = bootstrap(j, n_boot, seed)
    return out


def markdown(report: dict, model: str) -> str:
    """The result as a row of the HYPE / NCSNv2 tables: HYPE_inf, Fakes Error, Reals Error, Std., 95% CI."""
    head = ("| Model | HYPE∞ (%) | Fakes Error (%) | Reals Error (%) | Std. | 95% CI | Raters | Judgments |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
    if "hype" not in report:
        return head + f"| {model} | – | – | – | – | – | {report['raters']} | 0 |\n"
    b = report["bootstrap"]
    lo, hi = b["ci"]["hype"]
    return head + (f"| {model} | {report['hype']:.2f} | {report['fakes_error']:.2f} | {report['reals_error']:.2f} | "
                   f"{b['std']['hype']:.2f} | {lo:.2f} – {hi:.2f} | {report['raters']} | {report['judgments']} |\n")
