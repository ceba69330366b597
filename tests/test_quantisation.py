"""Data at its own quantisation (data.values): the decoder with one bin per value the data take sums to one and is
DDPM's at 8 bits, the bound only loses the wasted bins, training learns the digits' 17 levels, and the codec codes
on them and refuses what is not on them."""

import math

import numpy as np
import pytest
import torch

from scorekit.likelihood import discretized_gaussian_log_likelihood, discretized_log_likelihood_on_values, value_edges

DIGIT_VALUES = [round(v * 255 / 16) for v in range(17)]
TINY = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[]", "model.norm_groups=4",
        "process.num_timesteps=10", "sampling.steps=0"]


@pytest.mark.parametrize("values", [DIGIT_VALUES, [0, 255], [7], [3, 4, 5, 200]])
def test_the_decoder_sums_to_one_over_the_data_values(values):
    """Summed over the K values (float64), the probabilities of every pixel's decoder are 1 to rounding."""
    v = torch.tensor(values)
    centres, _ = value_edges(v, (-1.0, 1.0))
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(50, 1, generator=g, dtype=torch.float64) * 2.4 - 1.2
    log_scale = torch.rand(50, 1, generator=g, dtype=torch.float64) * 4 - 5  # std 0.007..0.37
    logp = discretized_log_likelihood_on_values(centres[None, :].expand(50, -1), mean, log_scale, v, (-1.0, 1.0))
    total = logp.exp().sum(1)
    assert torch.allclose(total, torch.ones(50, dtype=torch.float64), atol=len(values) * 1e-12), total


def test_with_all_256_values_it_is_ddpms_decoder():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4000,), generator=g).double() / 127.5 - 1
    mean = torch.randn(4000, generator=g, dtype=torch.float64) * 0.7
    log_scale = torch.rand(4000, generator=g, dtype=torch.float64) * 5 - 6
    ours = discretized_log_likelihood_on_values(x, mean, log_scale, torch.arange(256), (-1.0, 1.0))
    ddpm = discretized_gaussian_log_likelihood(x, mean, log_scale, (-1.0, 1.0))
    assert torch.allclose(ours, ddpm, rtol=1e-9, atol=1e-9)
    # and on NCSN's [0, 1] range
    ours = discretized_log_likelihood_on_values((x + 1) / 2, mean, log_scale, torch.arange(256), (0.0, 1.0))
    assert torch.allclose(ours, discretized_gaussian_log_likelihood((x + 1) / 2, mean, log_scale, (0.0, 1.0)),
                          rtol=1e-9, atol=1e-9)


def _tiny_digits(values):
    from scorekit.config import load_config
    from scorekit.factory import build_denoiser

    cfg = load_config("ddpm-digits", [*TINY, f"data.values={values}"])
    d = build_denoiser(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in d.net.parameters():
            p.copy_(torch.randn(p.shape) * 0.05)
    return d


def test_the_bound_loses_only_the_wasted_bins():
    """The same network and images: on the 17 values every t > 0 term is unchanged and the decoder's term is the
    8-bit one minus log2 of the mass its wider bins gather (never more)."""
    from scorekit.data import digits
    from scorekit.likelihood import vlb_bpd
    from scorekit.rng import ImageRNG

    x = digits("test").images[:6].double() / 127.5 - 1
    eight, on_values = _tiny_digits([]), _tiny_digits(DIGIT_VALUES)
    on_values.net.load_state_dict(eight.net.state_dict())
    a = vlb_bpd(eight, x.float(), ImageRNG(0, list(range(6))))
    b = vlb_bpd(on_values, x.float(), ImageRNG(0, list(range(6))))
    assert torch.allclose(a["terms"][:, 1:], b["terms"][:, 1:])
    assert (b["terms"][:, 0] <= a["terms"][:, 0] + 1e-9).all() and (b["total"] < a["total"]).all()


def test_training_learns_the_digits_levels(tmp_path):
    from scorekit.config import load_config
    from scorekit.data import digits
    from scorekit.training import train_run

    train_run("ddpm-digits", tmp_path / "run", [*TINY, "training.steps=1", "training.test_every=0"], progress=False,
              evaluate=False)
    cfg = load_config(tmp_path / "run" / "config.yaml")
    assert cfg.data.values == np.unique(digits("train").images.numpy()).tolist() == DIGIT_VALUES
    # a run started with them keeps them when resumed with other data settings
    train_run(tmp_path / "run", None, ["training.steps=2"], progress=False, evaluate=False)
    assert load_config(tmp_path / "run" / "config.yaml").data.values == DIGIT_VALUES


def test_the_bound_refuses_images_off_the_values(tmp_path):
    from scorekit.errors import DataError
    from scorekit.evaluate import bits_per_dim

    d = _tiny_digits([0, 16, 32])
    with pytest.raises(DataError, match=r"test image 0: pixel value \d+ is not among the run's 3 data values"):
        bits_per_dim(d, n=2)


def test_bad_values_are_refused_by_name():
    from scorekit.config import ConfigError, load_config

    for bad in ("[5,3]", "[0,256]", "[1,1]"):
        with pytest.raises(ConfigError, match="data.values"):
            load_config("ddpm-digits", [f"data.values={bad}"])


def test_the_codec_codes_on_the_data_values(tmp_path):
    pytest.importorskip("constriction")
    from scorekit.codec import CodecError, compress, decompress, read_header
    from scorekit.data import digits
    from scorekit.interop.common import write_run
    from scorekit.run import load

    d = _tiny_digits(DIGIT_VALUES)
    for name, values in (("levels", DIGIT_VALUES), ("eight", [])):
        cfg = load_config_with(values)
        write_run(tmp_path / name, cfg, d.net.state_dict(), d.net.state_dict(), 10, {"test": "quantisation"})
    levels, eight = load(tmp_path / "levels"), load(tmp_path / "eight")
    x = digits("test").images[:40]
    data, rates = compress(levels, x)
    assert torch.equal(decompress(levels, data), x) and read_header(data)[0]["values"] == 17  # the digits: 17 even levels
    data8, rates8 = compress(eight, x)
    # the same network: only the decoder differs, so the file is smaller by what the wider bins save
    assert rates["bits_per_dim"] < rates8["bits_per_dim"]
    with pytest.raises(CodecError, match="data.values differs"):
        decompress(eight, data)
    off = x.clone()
    off[3, 0, 2, 2] = 1
    with pytest.raises(CodecError, match="image d.png: pixel value 1 is not among the run's 17 data values"):
        compress(levels, off, names=[f"{c}.png" for c in "abcd" * 10])
    assert math.isfinite(rates["file_bits_per_dim"])


def load_config_with(values):
    from scorekit.config import load_config

    return load_config("ddpm-digits", [*TINY, f"data.values={values}"])


def test_the_decoder_on_values_has_finite_gradients_in_every_bin():
    """The outermost bins reach to +-infinity: their gradients must stay finite (a bound loss trains through them)."""
    v = torch.tensor(DIGIT_VALUES)
    centres, _ = value_edges(v, (-1.0, 1.0))
    x = centres.float().repeat(3)
    mean = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).requires_grad_()
    log_scale = torch.full(x.shape, -3.0, requires_grad=True)
    discretized_log_likelihood_on_values(x, mean, log_scale, v, (-1.0, 1.0)).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()
