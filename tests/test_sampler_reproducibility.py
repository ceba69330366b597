import torch

from scorekit.evaluation.likelihood import vlb_bpd
from scorekit.model.factory import build
from scorekit.rng import ImageRNG
from scorekit.samplers import sample_ancestral


def _random_model():
    d = build("ddpm-digits")
    torch.nn.init.normal_(d.net.conv_out.weight, std=0.05)  # make the untrained net's output non-zero
    return d.eval()


def test_same_seed_same_images_at_any_batch_size():
    d = _random_model()
    full = sample_ancestral(d, (6, 1, 8, 8), ImageRNG(7, range(6)), steps=20)
    parts = [sample_ancestral(d, (len(ix), 1, 8, 8), ImageRNG(7, ix), steps=20) for ix in ([0, 1, 2, 3], [4], [5])]
    assert torch.allclose(full, torch.cat(parts), atol=1e-5)
    other = sample_ancestral(d, (6, 1, 8, 8), ImageRNG(8, range(6)), steps=20)
    assert (other - full).abs().max() > 0.1


def test_callback_collects_the_chain_and_x0_predictions():
    d = _random_model()
    seen = []
    x = sample_ancestral(d, (2, 1, 8, 8), ImageRNG(0, 2), steps=10, callback=seen.append)
    assert [s["t"] for s in seen] == list(range(9, -1, -1))
    assert torch.equal(seen[-1]["x"], x)
    assert all(s["x0"].abs().max() <= 1 for s in seen)  # clipped predictions


def test_bits_per_dim_is_independent_of_batching():
    d = _random_model().respaced(torch.arange(0, 1000, 50))
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    a = vlb_bpd(d, x0, ImageRNG(3, range(4)))["total"]
    b = torch.cat([vlb_bpd(d, x0[i:i + 2], ImageRNG(3, range(i, i + 2)))["total"] for i in (0, 2)])
    assert torch.allclose(a, b, atol=1e-4)
