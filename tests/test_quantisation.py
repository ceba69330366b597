"""Data at its own quantisation (data.values): the decoder with one bin per value the data take sums to one and is
DDPM's at 8 bits, the bound only loses the wasted bins, training learns the digits' 17 levels, and the codec codes
on them and refuses what is not on them."""

import json
import math

import numpy as np
import pytest
import torch

from scorekit.evaluation.likelihood import (
    discretized_gaussian_log_likelihood,
    discretized_log_likelihood_on_values,
    value_edges,
)

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
    from scorekit.model.factory import build_denoiser

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
    from scorekit.evaluation.likelihood import vlb_bpd
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


def test_on_values_is_the_decoders_most_likely_value():
    """Each pixel goes to the value whose bin holds it: the nearest value's centre (brute force), ties aside."""
    from scorekit.images import on_values

    v = torch.tensor(DIGIT_VALUES)
    x = torch.rand(2000, dtype=torch.float64) * 2.4 - 1.2  # beyond [-1, 1] too: the outer bins are unbounded
    got = on_values(x, v, (-1.0, 1.0))
    centres = v.double() / 127.5 - 1
    want = v[(x[:, None] - centres[None, :]).abs().argmin(1)].to(torch.uint8)
    assert got.dtype == torch.uint8 and torch.equal(got, want)


def test_samples_of_a_run_on_values_take_only_those_values(tmp_path, capsys):
    """A run that learnt the digits' 17 levels writes samples on them (grid, PNGs, npz and what the judges see);
    --raw keeps the sampler's continuous output, rounded to 8 bits."""
    from PIL import Image

    from scorekit.cli import main
    from scorekit.config import load_config
    from scorekit.interop.common import write_run

    d = _tiny_digits(DIGIT_VALUES)
    cfg = load_config("ddpm-digits", [*TINY, f"data.values={DIGIT_VALUES}", "sampling.steps=4"])
    write_run(tmp_path / "run", cfg, d.net.state_dict(), None, 1, {"test": "random weights"})
    for raw in (False, True):
        out = tmp_path / ("raw" if raw else "on")
        assert main(["sample", str(tmp_path / "run"), "--n", "64", "--out", str(out), "--no-progress",
                     *(["--raw"] if raw else [])]) == 0
        x = np.load(out / "samples.npz")["samples"]
        png = np.asarray(Image.open(out / "images" / "000000.png"))
        found = set(np.unique(x).tolist())
        if raw:
            assert len(found - set(DIGIT_VALUES)) > 10
        else:
            assert found <= set(DIGIT_VALUES) and set(np.unique(png).tolist()) <= set(DIGIT_VALUES)
        assert json.loads((out / "summary.json").read_text())["on_values"] is not raw
    capsys.readouterr()


def test_the_bound_refuses_images_off_the_values(tmp_path):
    from scorekit.errors import DataError
    from scorekit.evaluation.bpd import bits_per_dim

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
    assert torch.equal(decompress(levels, data), x) and read_header(data)[0]["values"] == 17  # 17 even levels
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


@pytest.mark.parametrize("bits", [1, 3, 8, 12, 16])
def test_the_decoder_at_any_bit_depth_sums_to_one(bits):
    """data.bits b: below 8, the 2^b even levels of 8-bit files (a value set); 8, DDPM's decoder; above 8, 2^b bins of
    width 2 / (2^b - 1). Summed over every level in float64, each pixel's probabilities are 1 to rounding."""
    from types import SimpleNamespace

    from scorekit.evaluation.likelihood import data_values, pixel_max

    d = SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(values=[], bits=bits)))
    g = torch.Generator().manual_seed(bits)
    mean = torch.rand(20, 1, generator=g, dtype=torch.float64) * 2.2 - 1.1
    log_scale = torch.rand(20, 1, generator=g, dtype=torch.float64) * 5 - 9  # std 1e-4..0.02
    values = data_values(d)
    if bits < 8:
        assert values.tolist() == [round(i * 255 / (2**bits - 1)) for i in range(2**bits)]
        centres, _ = value_edges(values, (-1.0, 1.0))
        logp = discretized_log_likelihood_on_values(centres[None].expand(20, -1), mean, log_scale, values, (-1.0, 1.0))
    else:
        n = pixel_max(d) + 1
        assert values is None and n == 2**bits
        x = (torch.arange(n, dtype=torch.float64) / (n - 1) * 2 - 1)[None].expand(20, -1)
        logp = discretized_gaussian_log_likelihood(x, mean, log_scale, (-1.0, 1.0), n)
        if bits == 8:
            assert torch.equal(logp, discretized_gaussian_log_likelihood(x, mean, log_scale, (-1.0, 1.0)))
    total = logp.exp().sum(1)
    # the 1e-12 floor adds at most 1e-12 per bin far from the mean
    assert torch.allclose(total, torch.ones(20, dtype=torch.float64), atol=2**bits * 1e-12 + 1e-12), total


def _sixteen_bit(n: int, seed: int) -> torch.Tensor:
    """N(0.1, 0.3^2) in [-1, 1] as 16-bit integers (int32), (n, 1, 8, 8)."""
    x = 0.1 + 0.3 * torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ((x.clamp(-1, 1) + 1) / 2 * 65535).round().to(torch.int32)


def test_sixteen_bit_images_round_trip_through_the_codec_at_their_bound():
    """The exact Gaussian model with data.bits=16: 16-bit images come back exactly, the rate is within 3% of the
    bound with the 16-bit decoder (about 8 bits more per pixel than at 8 bits: the bins are 256 times narrower),
    and a value outside 0..65535 or 8-bit data are refused."""
    pytest.importorskip("constriction")
    from types import SimpleNamespace

    from scorekit.codec import CodecError, compress, decompress, read_header
    from scorekit.evaluation.likelihood import vlb_bpd
    from scorekit.processes import VPProcess
    from scorekit.rng import ImageRNG
    from scorekit.toy import GaussianMixture, exact_denoiser

    d = exact_denoiser(GaussianMixture.gaussian(0.1, 0.3, 64), VPProcess.from_schedule("linear", 100, 1e-4, 0.2),
                       (1, 8, 8))
    d.config = SimpleNamespace(data=SimpleNamespace(values=[], bits=16))
    x = _sixteen_bit(24, 0)
    bound = vlb_bpd(d, x.double() / 65535 * 2 - 1, ImageRNG(1, 24))["total"].mean().item()
    data, rates = compress(d, x)
    assert read_header(data)[0]["bits"] == 16 and torch.equal(decompress(d, data), x)
    assert abs(rates["bits_per_dim"] - bound) < 0.03 * bound and bound > 9, (rates, bound)
    with pytest.raises(CodecError, match="pixel value 70000 is outside the run's 16-bit range"):
        compress(d, torch.full((1, 1, 8, 8), 70000, dtype=torch.int32))
    d.config.data.bits = 8
    with pytest.raises(CodecError, match="16-bit pixels; this run's data are 8-bit"):
        decompress(d, data)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_png_and_tiff_files_round_trip_through_the_commands(tmp_path, suffix):
    pytest.importorskip("constriction")
    from PIL import Image

    from scorekit.cli import main
    from scorekit.config import load_config
    from scorekit.interop.common import write_run
    from scorekit.model.factory import build_denoiser

    cfg = load_config("ddpm-digits", [*TINY, "data.bits=16", "data.detect_values=false"])
    net = build_denoiser(cfg).net
    write_run(tmp_path / "run", cfg, net.state_dict(), net.state_dict(), 10, {"test": "16-bit"})
    src = tmp_path / "in"
    src.mkdir()
    x = _sixteen_bit(3, 1)
    for i in range(3):
        Image.fromarray(x[i, 0].numpy().astype(np.uint16)).save(src / f"scan{i}{suffix}")
    assert main(["compress", str(tmp_path / "run"), str(src), "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    assert main(["decompress", str(tmp_path / "run"), str(tmp_path / "f"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    for i in range(3):
        back = np.asarray(Image.open(tmp_path / "out" / f"scan{i}{suffix}"))
        assert back.dtype == np.uint16 and np.array_equal(back.astype(np.int32), x[i, 0].numpy())
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "eight.png")
    assert main(["compress", str(tmp_path / "run"), str(src), "--out", str(tmp_path / "g"), "--no-progress"]) == 2


def test_a_run_trains_on_a_folder_of_sixteen_bit_images(tmp_path):
    """data.bits=16 on a folder of 16-bit PNG / TIFF files: the loader keeps every value (int32), training maps
    0..65535 onto [-1, 1], the bound is measured with 2^16 bins, and an 8-bit file in the folder is refused."""
    from PIL import Image

    from scorekit.config import load_config
    from scorekit.data import build_source
    from scorekit.data.pipeline import preprocess
    from scorekit.errors import DataError
    from scorekit.evaluation.bpd import bits_per_dim
    from scorekit.run import load
    from scorekit.training.loop import train_run

    folder = tmp_path / "scans"
    folder.mkdir()
    x = _sixteen_bit(12, 4)
    for i in range(12):
        Image.fromarray(x[i, 0].numpy().astype(np.uint16)).save(folder / f"{i:02d}{'.png' if i % 2 else '.tif'}")
    over = [*TINY, "data.bits=16", "data.detect_values=false", "data.dataset=folder", f"data.path={folder}",
            "training.steps=2", "training.batch_size=4", "training.test_every=0", "eval.bpd_images=0",
            "eval.proxy_samples=0", "sampling.num_samples=4", "sampling.steps=2"]
    cfg = load_config("ddpm-digits", over)
    source = build_source(cfg.data)
    loaded = torch.stack([source[i] for i in range(12)])
    assert loaded.dtype == torch.int32 and torch.equal(loaded, x)
    assert preprocess(torch.tensor([0, 65535]), (-1.0, 1.0), max_value=65535).tolist() == [-1.0, 1.0]
    train_run("ddpm-digits", tmp_path / "run", over, device="cpu", progress=False)
    d16 = load(tmp_path / "run").eval()
    res = bits_per_dim(d16, split="train", n=4)
    assert math.isfinite(res["bpd"])
    # The same network as an 8-bit model, on the same images (x16 = 257 x8 is the same point of [-1, 1]): every term
    # but the decoder is identical, and the decoder's 16-bit bins, 257 times narrower and inside the 8-bit ones, cost
    # more: over 6 bits/dim more on these interior pixels (log2 257 = 8.0 where the density is flat across a bin).
    # A 16-bit run on 8-bit bins, or 0..65535 mapped elsewhere, fails this.
    from scorekit.evaluation.likelihood import vlb_bpd
    from scorekit.model.factory import build_denoiser
    from scorekit.rng import ImageRNG

    d8 = build_denoiser(load_config("ddpm-digits", [*TINY, "data.detect_values=false"])).eval()
    d8.net.load_state_dict(d16.net.state_dict())
    x8 = (x[:4].double() / 65535 * 255).round().to(torch.int32)
    x0 = preprocess(x8, (-1.0, 1.0), max_value=255)
    assert torch.equal(preprocess(x8 * 257, (-1.0, 1.0), max_value=65535), x0)
    with torch.no_grad():
        b16, b8 = vlb_bpd(d16, x0, ImageRNG(0, 4)), vlb_bpd(d8, x0, ImageRNG(0, 4))
    assert torch.equal(b16["terms"][:, 1:], b8["terms"][:, 1:]) and torch.equal(b16["prior"], b8["prior"])
    gap = b16["terms"][:, 0] - b8["terms"][:, 0]
    assert bool((gap > 6).all()) and torch.allclose(b16["total"] - b8["total"], gap), gap
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "eight.png")
    with pytest.raises(DataError, match="16-bit grey images"):
        build_source(cfg.data)[12]


@pytest.mark.parametrize("bits", [1, 4, 8, 16])
def test_codec_round_trips_at_every_bit_depth_batch_size_and_thread_count(bits):
    """Images at b bits through the exact Gaussian model with data.bits=b: exact at batch sizes 1 and 7, and the file
    does not depend on the caller's thread count."""
    pytest.importorskip("constriction")
    from types import SimpleNamespace

    from scorekit.codec import compress, decompress
    from scorekit.evaluation.likelihood import even_values
    from scorekit.processes import VPProcess
    from scorekit.toy import GaussianMixture, exact_denoiser

    d = exact_denoiser(GaussianMixture.gaussian(0.1, 0.4, 64), VPProcess.from_schedule("linear", 20, 1e-4, 0.3),
                       (1, 8, 8))
    d.config = SimpleNamespace(data=SimpleNamespace(values=[], bits=bits))
    if bits > 8:
        x = _sixteen_bit(9, 5)
    else:
        levels = torch.tensor(even_values(2**bits))
        u = (0.1 + 0.4 * torch.randn(9, 1, 8, 8, generator=torch.Generator().manual_seed(5)) + 1) * 127.5
        x = levels[(u[..., None] - levels).abs().argmin(-1)].to(torch.uint8)
    before = torch.get_num_threads()
    files = []
    try:
        for threads, batch in ((1, 1), (2, 1), (2, 7)):
            torch.set_num_threads(threads)
            data, _ = compress(d, x, batch_size=batch)
            assert torch.equal(decompress(d, data), x)
            files.append(data)
    finally:
        torch.set_num_threads(before)
    assert files[0] == files[1] and files[2] != files[0]  # the chunks differ with the batch size, not the threads
