"""The papers' figures: interpolations (DDPM Fig. 8; NCSNv2's interpolation sampler), progressive
generation and the rate-distortion curve (DDPM Fig. 5-6), and nearest training neighbours (NCSNv2)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from ..images import atomic_write_bytes, from_uint8, to_uint8
from ..model.denoiser import Denoiser
from ..rng import ImageRNG
from ..samplers.ancestral import sample_ancestral
from .likelihood import vlb_bpd


@torch.no_grad()
def ddpm_interpolation(denoiser: Denoiser, x0: torch.Tensor, x1: torch.Tensor, *, ts: list[int],
                       lambdas: int = 11, seed: int = 0, clip_denoised: bool = True) -> torch.Tensor:
    """Encode two images to step t with q, mix linearly, decode with the reverse chain (DDPM Sec. 4.3).

    Returns uint8 (len(ts), lambdas + 2, C, H, W): per row t, the two sources at the ends and the
    decodings for lambda = 0..1 between; the decoding noise is shared across lambda within a row."""
    process, device = denoiser.process, denoiser.device
    rows = []
    src = to_uint8(torch.stack([x0, x1]), denoiser.data_range)
    for r, t in enumerate(ts):
        level = torch.full((2,), t, dtype=torch.long, device=device)
        eps = ImageRNG(seed + 7919 * (r + 1), 2, device).randn_like(x0[None].expand(2, *x0.shape))
        xt = process.q_sample(torch.stack([x0, x1]).to(device), level, eps)
        lam = torch.linspace(0, 1, lambdas, device=device).reshape(-1, *[1] * x0.ndim)
        mixed = (1 - lam) * xt[0] + lam * xt[1]
        rng = ImageRNG(seed + r, [0] * lambdas, device)  # the same noise stream for every lambda
        out = sample_ancestral(denoiser, tuple(mixed.shape), rng, x_T=mixed, start=t, clip_denoised=clip_denoised)
        rows.append(torch.cat([src[:1], to_uint8(out, denoiser.data_range), src[1:]]))
    return torch.stack(rows)


@torch.no_grad()
def progressive(denoiser: Denoiser, n: int, *, snapshots: int = 10, seed: int = 0) -> torch.Tensor:
    """Predicted x0 along the ancestral chain (DDPM Fig. 6): uint8 (n, snapshots + 1, C, H, W), the last
    column being the sample."""
    T = denoiser.process.num_levels
    keep = set(np.linspace(T - 1, 0, snapshots).round().astype(int).tolist())
    frames: list[torch.Tensor] = []

    def collect(info: dict) -> None:
        if info["t"] in keep:
            frames.append(to_uint8(info["x0"], denoiser.data_range))

    x = sample_ancestral(denoiser, (n, *denoiser.image_shape), ImageRNG(seed, n, denoiser.device), callback=collect)
    frames.append(to_uint8(x, denoiser.data_range))
    return torch.stack(frames, dim=1)


def rate_distortion(denoiser: Denoiser, images_u8: torch.Tensor, *, seed: int = 0, batch_size: int = 100) -> dict:
    """DDPM's progressive lossy code on real images (Sec. 4.3, Fig. 5): at step t the rate is the prior
    plus the KL terms sent from T down to t (bits/dim), the distortion the RMSE of the x0 prediction
    from x_t on the [0, 255] scale. Also returns the total bound (rate at t = 1 plus the decoder L_0)."""
    terms, mse, prior = [], [], []
    for i in range(0, len(images_u8), batch_size):
        x0 = from_uint8(images_u8[i:i + batch_size], denoiser.data_range).to(denoiser.device)
        out = vlb_bpd(denoiser, x0, ImageRNG(seed, range(i, i + len(x0)), denoiser.device))
        terms.append(out["terms"].cpu())
        mse.append(out["mse"].cpu())
        prior.append(out["prior"].cpu())
    terms, mse, prior = torch.cat(terms).mean(0), torch.cat(mse).mean(0), torch.cat(prior).mean()
    kl = terms.clone()
    kl[0] = 0.0  # L_0 is the decoder's NLL, the distortion term, not part of the rate
    rate = prior + kl.flip(0).cumsum(0).flip(0)  # rate[t] = L_T + sum_{s >= t} L_s
    scale = 255.0 / (denoiser.data_range[1] - denoiser.data_range[0])
    return {"t": np.arange(1, len(rate) + 1), "rate": rate.numpy(), "distortion": mse.sqrt().numpy() * scale,
            "total_bpd": float(rate[1] + terms[0]) if len(rate) > 1 else float(prior + terms[0]),
            "decoder_bpd": float(terms[0]), "n": len(images_u8)}


def write_rate_distortion(csv_path: Path, png_path: Path, rd: dict) -> dict[str, str]:
    """The rate-distortion curve as a CSV and a three-panel PNG (distortion, rate, rate-distortion)."""
    from .plots import figure

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["t", "rate_bits_per_dim", "distortion_rmse_0_255"])
    w.writerows(zip(rd["t"].tolist(), rd["rate"].tolist(), rd["distortion"].tolist()))
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    with figure(png_path, ncols=3, size=(14, 4)) as (a, b, c):
        a.plot(rd["t"], rd["distortion"])
        a.set(xlabel="reverse step t", ylabel="distortion (RMSE, [0, 255])", title="distortion")
        b.plot(rd["t"], rd["rate"])
        b.set(xlabel="reverse step t", ylabel="rate (bits/dim)", title="rate")
        c.plot(rd["rate"], rd["distortion"])
        c.set(xlabel="rate (bits/dim)", ylabel="distortion (RMSE, [0, 255])", title="rate-distortion")
        for ax in (a, b, c):
            ax.grid(alpha=0.3)
    return {"csv": str(csv_path), "png": str(png_path)}


def nearest_neighbours(samples: torch.Tensor, train: torch.Tensor, k: int = 5, *,
                       sample_features: np.ndarray | None = None, train_features: np.ndarray | None = None
                       ) -> dict[str, np.ndarray]:
    """Indices of each sample's k nearest training images in pixel l2 (and in feature space)."""
    def knn(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(a), 256):
            out.append(torch.cdist(a[i:i + 256], b).topk(k, largest=False).indices)
        return torch.cat(out).numpy()

    res = {"pixel": knn(samples.flatten(1).double(), train.flatten(1).double())}
    if sample_features is not None and train_features is not None:
        res["feature"] = knn(torch.from_numpy(sample_features), torch.from_numpy(train_features))
    return res


def neighbours_grid(path: Path, samples: torch.Tensor, train: torch.Tensor, nn_idx: dict[str, np.ndarray],
                   feature_space: str = "feature space") -> Path:
    """Each row: the sample, its k nearest training images in pixel l2, a blank column, its k nearest in
    ``feature_space``; titled and labelled."""
    from .plots import labeled_grid

    k = nn_idx["pixel"].shape[1]
    blank = torch.full_like(samples[:1], 255)
    rows = []
    for i in range(len(samples)):
        row = [samples[i:i + 1], train[nn_idx["pixel"][i]]]
        if "feature" in nn_idx:
            row += [blank, train[nn_idx["feature"][i]]]
        rows.append(torch.cat(row))
    cols = ["sample"] + [f"pixel {j + 1}" for j in range(k)]
    title = "Nearest training images of each sample (left column): pixel space (l2)"
    if "feature" in nn_idx:
        cols += [""] + [f"feature {j + 1}" for j in range(k)]
        title += f" | {feature_space}"
    return labeled_grid(path, torch.stack(rows), title=title, col_labels=cols,
                        row_labels=[f"sample {i}" for i in range(len(samples))])
