"""Bits/dim over a data split: DDPM's variational bound or the probability-flow ODE likelihood."""

from __future__ import annotations

import numpy as np
import torch

from ..data.pipeline import preprocess
from ..data.sources import build_source
from ..dist import Dist
from ..errors import DataError
from ..model.denoiser import Denoiser
from ..rng import ImageRNG
from .likelihood import data_values, first_off_values, ode_bpd, pixel_max, vlb_bpd


def bits_per_dim(denoiser: Denoiser, *, split: str = "test", n: int = 0, seed: int = 0, batch_size: int = 100,
                 data=None, method: str = "vlb", progress: bool = False, dist: Dist | None = None,
                 **ode_options) -> dict:
    """Bits/dim averaged over ``n`` images of a data split (0 = all): DDPM's variational bound
    (``method="vlb"``, VP models) or the probability-flow ODE likelihood (``method="ode"``, any model).
    Image i uses the generator (seed, i), so the result does not depend on batching or processes
    (under torchrun each process takes every world-th batch; the totals are gathered)."""
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
