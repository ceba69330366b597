"""Evaluation workflows shared by training and the command line: generate, write, bits/dim, proxy metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .config import FEWSTEP_LOSSES
from .data.sources import build_source
from .denoiser import Denoiser
from .dist import Dist
from .errors import DataError
from .images import OutPaths, save_grid, save_npz, save_pngs, to_uint8
from .likelihood import data_values, first_off_values, on_values, pixel_max, vlb_bpd
from .rng import ImageRNG
from .samplers import sample, sampling_options


def fast_sampling_denoiser(denoiser: Denoiser, *, precision: str = "fp32", compile: bool = False
                           ) -> tuple[Denoiser, bool]:
    """The sampling fast path: channels-last and, if asked, torch.compile with CUDA graphs on CUDA; returns
    the denoiser to sample with and whether to run the network under bf16 autocast."""
    cuda = denoiser.device.type == "cuda"
    bf16 = precision == "bf16" or (precision == "auto" and cuda)
    if cuda:
        denoiser.net.to(memory_format=torch.channels_last)
    if compile:
        denoiser = denoiser.with_net(torch.compile(denoiser.net, mode="reduce-overhead" if cuda else "default"))
    return denoiser, bf16


@torch.no_grad()
def generate(denoiser: Denoiser, n: int, *, seed: int = 0, batch_size: int = 256, sampler: str | None = None,
             options: dict | None = None, progress: bool = False, dist: Dist | None = None,
             precision: str | None = None, compile: bool | None = None, labels: torch.Tensor | None = None,
             guidance: float = 1.0, classifier: Denoiser | None = None, classifier_scale: float = 0.0,
             raw: bool = False) -> torch.Tensor:
    """n images as uint8 (N, C, H, W); image i depends only on (seed, i). The batches [kB, (k+1)B) are the
    same whatever the number of processes (under torchrun, rank r samples batches r, r + world, ...), so
    the images are bit-identical with 1 or many processes. ``precision`` / ``compile`` default to the
    run's sampling settings; a compiled network always sees full batches (the last one is padded with
    extra images that are discarded), so its shapes stay static. ``labels`` (one class per image) with
    ``guidance`` / ``classifier`` and ``classifier_scale`` sample classes (see :mod:`scorekit.guidance`). A run
    that learnt its data's value set (``data.values``) gives images on that set (:func:`samples_u8`) unless
    ``raw``."""
    cfg = denoiser.config
    name = sampler or cfg.sampling.sampler
    opts = {**sampling_options(cfg.sampling), **(options or {})}
    compile = cfg.sampling.compile if compile is None else compile
    denoiser, bf16 = fast_sampling_denoiser(denoiser, precision=precision or cfg.sampling.precision,
                                            compile=compile)
    shape = denoiser.image_shape
    dist = dist or Dist(device=denoiser.device)
    starts = list(range(0, n, batch_size))
    mine = starts[dist.rank::dist.world]
    out = []
    for start in mine:
        idx = range(start, (start + batch_size) if compile else min(n, start + batch_size))
        d = denoiser
        if labels is not None:  # the padding of a compiled batch repeats the last label
            y = labels[torch.tensor([min(i, n - 1) for i in idx])]
            d = denoiser.conditional(y, guidance=guidance, classifier=classifier, classifier_scale=classifier_scale)
        with torch.autocast(denoiser.device.type, dtype=torch.bfloat16, enabled=bf16):
            x = sample(d, name, (len(idx), *shape), ImageRNG(seed, idx, denoiser.device),
                       progress=progress, **opts)
        out.append(samples_u8(x[:max(0, min(n - start, len(idx)))], denoiser, raw=raw))
    if not dist.enabled:
        return torch.cat(out) if out else torch.empty(0, *shape, dtype=torch.uint8)
    rounds = math.ceil(len(starts) / dist.world)  # every rank contributes `rounds` padded batches
    padded = torch.zeros(rounds, batch_size, *shape, dtype=torch.uint8)
    for k, images in enumerate(out):
        padded[k, :len(images)] = images
    gathered = dist.gather_cat(padded.to(dist.device)).cpu().reshape(dist.world, rounds, batch_size, *shape)
    batches = [gathered[k % dist.world, k // dist.world] for k in range(len(starts))]
    return torch.cat([b[:min(batch_size, n - s)] for b, s in zip(batches, starts)])


def sample_values(denoiser: Denoiser, *, raw: bool = False) -> torch.Tensor | None:
    """The values a run's samples are written on: the data's value set when the run learnt one, else (and with
    ``raw``) None, every 8-bit value."""
    return None if raw else data_values(denoiser)


def samples_u8(x: torch.Tensor, denoiser: Denoiser, *, raw: bool = False) -> torch.Tensor:
    """A sampler's output as the uint8 images a run writes: on :func:`sample_values` (the decoder's most likely
    value, as the bound and the codec assume: the digits' 17 grey levels), else rounded to 8 bits."""
    values = sample_values(denoiser, raw=raw)
    return to_uint8(x, denoiser.data_range) if values is None else on_values(x, values, denoiser.data_range)


def write_samples(out: str | Path | OutPaths, images: torch.Tensor, grid_max: int = 256) -> dict[str, str]:
    """The grid of the first ``grid_max`` images, one PNG per image and samples.npz (uint8 NHWC): in a
    folder (grid.png, images/, samples.npz), or at an :class:`~scorekit.images.OutPaths` (the grid at its
    main file, the rest as its companions)."""
    paths = out if isinstance(out, OutPaths) else OutPaths(Path(out), Path(out) / "grid.png")
    grid = save_grid(paths.main, images[:grid_max])
    save_pngs(paths.companion("images"), images)
    save_npz(paths.companion("samples.npz"), samples=images.permute(0, 2, 3, 1).numpy())
    return {"grid": str(grid), "images": str(paths.companion("images")), "npz": str(paths.companion("samples.npz"))}


def bits_per_dim(denoiser: Denoiser, *, split: str = "test", n: int = 0, seed: int = 0, batch_size: int = 100,
                 data=None, method: str = "vlb", progress: bool = False, dist: Dist | None = None,
                 **ode_options) -> dict:
    """Bits/dim averaged over ``n`` images of a data split (0 = all): DDPM's variational bound
    (``method="vlb"``, VP models) or the probability-flow ODE likelihood (``method="ode"``, any model).
    Image i uses the generator (seed, i), so the result does not depend on batching or processes
    (under torchrun each process takes every world-th batch; the totals are gathered)."""
    from .data.pipeline import preprocess
    from .likelihood import ode_bpd

    source = build_source(data or denoiser.config.data, split)
    values = data_values(denoiser)
    n = len(source) if n <= 0 else min(n, len(source))
    dist = dist or Dist(device=denoiser.device)
    totals = torch.zeros(n, dtype=torch.float64)
    extra = {"prior_bpd": torch.zeros(n, dtype=torch.float64), "decoder_bpd": torch.zeros(n, dtype=torch.float64)}
    nfe = 0
    for start in list(range(0, n, batch_size))[dist.rank::dist.world]:
        idx = list(range(start, min(n, start + batch_size)))
        u8 = torch.stack([source[i] for i in idx])
        off = first_off_values(u8, values) if values is not None else None
        if off is not None:
            raise DataError(f"{split} image {idx[off[0]]}: pixel value {off[1]} is not among the run's {len(values)} "
                            "data values (data.values); the bound needs data on them")
        rng = ImageRNG(seed, idx, denoiser.device)
        if method == "ode":
            out = ode_bpd(denoiser, u8.to(denoiser.device), rng, **ode_options)
            totals[idx] = out["bpd"].cpu().double()
            nfe += int(out["nfe"])
        else:
            x0 = preprocess(u8, denoiser.data_range, max_value=pixel_max(denoiser)).to(denoiser.device)
            out = vlb_bpd(denoiser, x0, rng, progress=progress)
            totals[idx] = out["total"].cpu()
            extra["prior_bpd"][idx] = out["prior"].cpu().double()
            extra["decoder_bpd"][idx] = out["terms"][:, 0].cpu()
    if dist.enabled:
        totals = dist.sum(totals.to(dist.device)).cpu()
        extra = {k: dist.sum(v.to(dist.device)).cpu() for k, v in extra.items()}
    total = totals.numpy()
    res = {"bpd": float(total.mean()), "bpd_sem": float(total.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
           "n": n, "split": split, "method": method}
    if method == "ode":
        res.update(nfe_per_batch=nfe, **{k: v for k, v in ode_options.items()})
    else:
        res.update({k: float(v.mean()) for k, v in extra.items()})
    return res


def final_report(denoiser: Denoiser, run, dist: Dist | None = None, progress: bool = False,
                 timings: dict | None = None) -> dict:
    """After training: samples, bits/dim (DDPM) and the digits proxy metrics, as the config asks; a
    class-conditional model draws an equal share of every class at its sampling.guidance, and the proxy
    also reports the class agreement. RUN/samples/final holds every image that was scored (the grid shows the
    first sampling.num_samples). Writes ``summary.json`` in the run directory (with ``timings``, e.g. the
    training time, and the sampling and bound times) and returns it (on the main process)."""
    import time

    from .metrics.proxy import proxy_metrics

    cfg = denoiser.config
    dist = dist or Dist(device=denoiser.device)
    t0 = time.perf_counter()
    n = max(cfg.sampling.num_samples, cfg.eval.proxy_samples)
    guided = {}
    if cfg.model.num_classes:
        from .guidance import labels_for

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
            from .metrics.min_n import min_n
            from .metrics.proxy import FEATURE_DIM

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
