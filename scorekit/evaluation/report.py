"""After training: the run's samples, bits/dim and digits metrics in ``summary.json``, and their lines for humans."""

from __future__ import annotations

import time

from ..config import FEWSTEP_LOSSES
from ..dist import Dist
from ..model.denoiser import Denoiser
from .bpd import bits_per_dim
from .generate import generate, write_samples


def final_report(denoiser: Denoiser, run, dist: Dist | None = None, progress: bool = False,
                 timings: dict | None = None) -> dict:
    """After training: samples, bits/dim (DDPM) and the digits proxy metrics, as the config asks; a
    class-conditional model draws an equal share of every class at its sampling.guidance, and the proxy
    also reports the class agreement. RUN/samples/final holds every image that was scored (the grid shows the
    first sampling.num_samples). Writes ``summary.json`` in the run directory (with ``timings``, e.g. the
    training time, and the sampling and bound times) and returns it (on the main process)."""
    from ..metrics.proxy import proxy_metrics

    cfg = denoiser.config
    dist = dist or Dist(device=denoiser.device)
    t0 = time.perf_counter()
    n = max(cfg.sampling.num_samples, cfg.eval.proxy_samples)
    guided = {}
    if cfg.model.num_classes:
        from ..model.guidance import labels_for

        guided = {"labels": labels_for("all", n, cfg.model.num_classes), "guidance": cfg.sampling.guidance}
    images = generate(denoiser, n, seed=cfg.sampling.seed, batch_size=cfg.sampling.batch_size, dist=dist,
                      progress=progress and dist.main, **guided)
    summary: dict = {"step": getattr(denoiser, "checkpoint_step", None), "sampler": cfg.sampling.sampler,
                     **(timings or {})}
    if guided:
        summary.update(classes="all", guidance=guided["guidance"])
    if dist.main:
        files = write_samples(run.path / "samples" / "final", images, grid_max=cfg.sampling.num_samples)
        summary["n_samples"] = len(images)
        summary.update(grid=files["grid"], samples=files["npz"])
        if cfg.eval.proxy_samples and cfg.data.dataset == "digits":
            labels = guided["labels"][:cfg.eval.proxy_samples] if guided else None
            summary["proxy"] = proxy_metrics(images[:cfg.eval.proxy_samples], labels=labels)
        summary["sampling_s"] = round(time.perf_counter() - t0, 1)
        # continuous-time (likelihood-weighted) models: the ODE likelihood; DDPM's discrete losses: the bound
        method = "ode" if cfg.training.loss == "likelihood" else "vlb" if cfg.process.kind != "ve" else None
        if cfg.training.loss in FEWSTEP_LOSSES:  # a consistency function has no likelihood; pd students skip it
            method = None
        if cfg.eval.bpd_images and method:
            t1 = time.perf_counter()
            summary["bpd"] = bits_per_dim(denoiser, split="test", n=cfg.eval.bpd_images, seed=cfg.sampling.seed,
                                          progress=progress, method=method)
            summary["bpd_s"] = round(time.perf_counter() - t1, 1)
        run.write_summary(summary)
    dist.barrier()
    return summary


def describe(summary: dict) -> list[str]:
    """Human-readable lines of a summary."""
    lines = []
    if "bpd" in summary:
        b = summary["bpd"]
        lines.append(f"bits/dim ({b['split']}, {b['n']} images): {b['bpd']:.3f} +- {b['bpd_sem']:.3f}")
    if "proxy" in summary:
        p = summary["proxy"]
        if p["proxy_fd"] is None and p["proxy_is"] is None:
            from ..metrics.min_n import min_n
            from ..metrics.proxy import FEATURE_DIM

            need = max(min_n("proxy_fd", feature_dim=FEATURE_DIM), min_n("proxy_is"))
            lines.append(f"proxy FD and IS: not reported for {p['n']} samples (they need {need} or more: --n {need})")
        elif p["proxy_fd"] is None:
            lines.append(f"proxy FD: not reported ({p['too_few_samples']['proxy_fd']})")
        else:
            lines.append(f"proxy FD ({p['n']} samples vs test digits): {p['proxy_fd']:.2f} "
                         f"(real-vs-real floor {p['proxy_fd_floor']:.2f})")
        if p.get("hog_fd") is not None:  # the second judge (pixels and gradient orientations)
            lines.append(f"HOG FD ({p['n']} samples vs test digits): {p['hog_fd']:.2f} "
                         f"(real-vs-real floor {p['hog_fd_floor']:.2f})")
        if "agreement" in p:
            lines.append(f"class agreement (proxy classifier): {p['agreement']:.3f}")
        if p["proxy_is"] is None:
            if p["proxy_fd"] is not None:
                lines.append(f"proxy IS: not reported ({p['too_few_samples']['proxy_is']})")
        else:
            lines.append(f"proxy IS: {p['proxy_is']:.2f} (real digits {p['proxy_is_real']:.2f})")
    if "grid" in summary:
        lines.append(f"sample grid: {summary['grid']}")
    return lines
