"""Closed-form end to end: N(m, s^2 I) data has a known exact eps-predictor; plug it in as the model."""

import math

import pytest
import torch

from scorekit.evaluation.likelihood import vlb_bpd
from scorekit.processes import VPProcess
from scorekit.rng import ImageRNG
from scorekit.samplers import sample_ancestral
from scorekit.toy import GaussianMixture, exact_denoiser

M, S = 0.1, 0.3
PROCESS = VPProcess.from_schedule("linear", 1000)
DENOISER = exact_denoiser(GaussianMixture.gaussian(M, S, 64), PROCESS, (1, 8, 8))


@pytest.mark.parametrize("variance", ["fixedlarge", "fixedsmall"])
def test_ancestral_sampler_reproduces_the_data_distribution(variance):
    """Algorithm 2 with the exact eps. 256 images x 64 independent pixels = 16384 draws: the mean's
    standard error is S/128 = 0.0023 (we allow 4 of them); the std's is 0.5%, and the reverse process
    with a fixed variance is itself off by ~1% at T = 1000, so we allow 3%."""
    x = sample_ancestral(DENOISER, (256, 1, 8, 8), ImageRNG(0, 256), variance=variance, clip_denoised=False)
    assert abs(x.mean().item() - M) < 4 * S / 128
    assert x.std().item() == pytest.approx(S, rel=0.03)
    # pixels are independent in the data; the sampler must not correlate them
    flat = x.reshape(256, 64).double()
    corr = torch.corrcoef(flat.T)
    assert (corr - torch.eye(64, dtype=torch.float64)).abs().max().item() < 0.3


def _discretized_gaussian():
    """The data: N(M, S^2) quantised to 8 bits in [-1, 1]; its per-pixel probabilities and entropy."""
    bins = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    cdf = lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # noqa: E731
    lo = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), bins[1:] - 1 / 255])
    hi = torch.cat([bins[:-1] + 1 / 255, torch.tensor([math.inf], dtype=torch.float64)])
    pk = cdf((hi - M) / S) - cdf((lo - M) / S)
    return bins, pk, -(pk * pk.log2()).sum().item()


def test_vlb_bits_per_dim_is_close_to_the_entropy_and_not_below():
    """The bound is an upper bound on the NLL, whose expectation is at least the data entropy H. Each
    image's bound is a one-sample Monte Carlo estimate (std ~0.25 bits/dim), so over 128 images its
    standard error is ~0.02: the mean must not fall below H by more than 3 of them, and must lie within
    0.15 bits/dim above H (the fixed-variance reverse process costs ~0.09 here)."""
    bins, pk, entropy = _discretized_gaussian()
    g = torch.Generator().manual_seed(0)
    x0 = bins[torch.multinomial(pk, 128 * 64, replacement=True, generator=g)].float().reshape(128, 1, 8, 8)
    out = vlb_bpd(DENOISER, x0, ImageRNG(1, 128))
    total = out["total"]
    se = total.std().item() / math.sqrt(len(total))
    assert total.mean().item() >= entropy - 3 * se
    assert total.mean().item() <= entropy + 0.15
    assert torch.allclose(total, out["terms"].sum(1) + out["prior"])
    assert out["prior"].max().item() < 1e-4  # L_T is negligible, as the paper reports
    assert out["terms"].shape == (128, 1000) and bool((out["terms"][:, 1:] >= -1e-6).all())  # KLs are >= 0 (float32)
