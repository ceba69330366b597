"""The bits-back codec: exact round trips, a codelength at the bound on a closed-form model, and clear refusals
of damaged files and other models."""

import math

import pytest
import torch

pytest.importorskip("constriction")

from scorekit.codec import CodecError, compress, decompress  # noqa: E402
from scorekit.evaluation.likelihood import vlb_bpd  # noqa: E402
from scorekit.processes import VPProcess  # noqa: E402
from scorekit.rng import ImageRNG  # noqa: E402
from scorekit.toy import GaussianMixture, exact_denoiser  # noqa: E402

M, S = 0.1, 0.3


def _gaussian_digits(n: int, seed: int = 0):
    """N(M, S^2) quantised to the 256 values in [-1, 1] (as uint8), and the per-pixel entropy in bits."""
    bins = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    cdf = lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # noqa: E731
    lo = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), bins[1:] - 1 / 255])
    hi = torch.cat([bins[:-1] + 1 / 255, torch.tensor([math.inf], dtype=torch.float64)])
    pk = cdf((hi - M) / S) - cdf((lo - M) / S)
    k = torch.multinomial(pk, n * 64, replacement=True, generator=torch.Generator().manual_seed(seed))
    return k.reshape(n, 1, 8, 8).to(torch.uint8), -(pk * pk.log2()).sum().item()


@pytest.mark.parametrize("T,beta_end,n", [(100, 0.2, 64), (1000, 0.02, 24)])
def test_codelength_on_gaussian_data_is_the_bound(T, beta_end, n):
    """The exact model of Gaussian data: the coded length (net of the initial bits) of n images is within 3%
    of the variational bound of the same images (the library's bound, itself checked against the data entropy in
    test_gaussian_end_to_end; each is a one-path estimate with a standard error of ~0.03-0.05 bits/dim), never below
    the data's entropy by more than that noise, and the round trip is exact."""
    d = exact_denoiser(GaussianMixture.gaussian(M, S, 64), VPProcess.from_schedule("linear", T, 1e-4, beta_end),
                       (1, 8, 8))
    u8, entropy = _gaussian_digits(n)
    bound = vlb_bpd(d, u8.float() / 127.5 - 1, ImageRNG(1, n))["total"].mean().item()
    data, rates = compress(d, u8)
    assert torch.equal(decompress(d, data), u8)
    assert rates["bits_per_dim"] > entropy - 0.1
    assert abs(rates["bits_per_dim"] - bound) < 0.03 * bound, (rates, bound)
    assert rates["initial_bits"] == 32 * (math.ceil(64 * 10 / 32) + 1)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """Two small digits DDPMs over 10 levels with random weights (the codec is exact for any model; a random one
    only codes at a high rate)."""
    from scorekit.config import load_config
    from scorekit.interop.common import write_run
    from scorekit.model.factory import build_denoiser

    root = tmp_path_factory.mktemp("codec")
    cfg = load_config("ddpm-digits", ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[]",
                                      "model.norm_groups=4", "process.num_timesteps=10", "sampling.steps=0"])
    for seed, name in ((0, "run"), (1, "other")):
        net = build_denoiser(cfg).net
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        write_run(root / name, cfg, net.state_dict(), net.state_dict(), 10, {"test": "codec"})
    return root


def test_digits_round_trip_at_every_batch_size_and_thread_count(digits_run):
    """48 test digits: exact at batch sizes 1, 7 and 48; the file does not depend on the caller's thread count
    (coding runs on one thread); chunks follow the stack's bits."""
    from scorekit.data import digits
    from scorekit.run import load

    d = load(digits_run / "run")
    x = digits("test").images[:48]
    files = {}
    for batch in (1, 7, 48):
        data, rates = compress(d, x, batch_size=batch)
        assert torch.equal(decompress(d, data), x), batch
        files[batch] = data
        assert rates["chunks"] >= math.ceil(48 / batch)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert compress(d, x, batch_size=48)[0] == files[48]
        assert torch.equal(decompress(d, files[7]), x)
    finally:
        torch.set_num_threads(before)


def test_damaged_files_and_other_models_are_refused(digits_run):
    from scorekit.data import digits
    from scorekit.run import load

    d = load(digits_run / "run")
    x = digits("test").images[:5]
    data, _ = compress(d, x)
    flipped = bytearray(data)
    flipped[-3] ^= 0x10
    with pytest.raises(CodecError, match="SHA-256 does not match"):
        decompress(d, bytes(flipped))
    with pytest.raises(CodecError, match="truncated"):
        decompress(d, data[:-8])
    with pytest.raises(CodecError, match="bad magic"):
        decompress(d, b"PNG" + data[3:])
    with pytest.raises(CodecError, match="compressed with another model"):
        decompress(load(digits_run / "other"), data)


def test_compress_and_decompress_commands_give_back_the_png_files(digits_run, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from scorekit.cli import main

    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    g = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(src / f"img{i}.png")
    assert main(["compress", str(digits_run / "run"), str(tmp_path / "in"), "--out", str(tmp_path / "f.skc"),
                 "--no-progress"]) == 0
    assert "compressed 3 images" in capsys.readouterr().out
    assert main(["decompress", str(digits_run / "run"), str(tmp_path / "f.skc"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    for i in range(3):
        a = np.asarray(Image.open(src / f"img{i}.png"))
        b = np.asarray(Image.open(tmp_path / "out" / "sub" / f"img{i}.png"))
        assert np.array_equal(a, b)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert main(["compress", str(digits_run / "run"), str(tmp_path / "rgb.png"), "--out", str(tmp_path / "g")]) == 2
    assert "converting would not be lossless" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_bpd_codec_prints_the_measured_codelength_beside_the_bound(digits_run, capsys):
    import json

    from scorekit.cli import main

    assert main(["bpd", str(digits_run / "run"), "--n", "30", "--codec", "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["codec"]["bits_per_dim"] == pytest.approx(res["bpd"], rel=0.03)
    assert main(["bpd", str(digits_run / "run"), "--codec", "--method", "ode"]) == 2
    assert "use it with --method vlb" in capsys.readouterr().err


def test_the_header_is_compressed_and_names_are_optional(digits_run):
    """Format 2: 300 sequential names cost under 2 bytes each (LZMA), not the 20 of plain JSON; without names the
    header is under 200 bytes; the file's rate counts every byte; format-1 files still decode."""
    import hashlib
    import json

    from scorekit.codec import MAGIC_V1, read_header, weights_sha256
    from scorekit.data import digits
    from scorekit.run import load

    d = load(digits_run / "run")
    x = digits("test").images[:300]
    names = [f"test-{i:05d}.png" for i in range(300)]
    named, rn = compress(d, x, names=names, source="runs/digits")
    bare, rb = compress(d, x)
    plain_names = len(json.dumps(names))
    assert rb["header_bytes"] < 200 and rn["header_bytes"] - rb["header_bytes"] < 2 * 300 < plain_names / 3
    assert rn["file_bytes"] == len(named) and rn["file_bits_per_dim"] == 8 * len(named) / (300 * 64)
    assert rb["file_bytes"] == rb["header_bytes"] + rb["payload_bytes"]
    header, payload = read_header(named)
    assert header["names"] == names and header["source"] == "runs/digits" and "names" not in read_header(bare)[0]
    assert torch.equal(decompress(d, bare), x)
    # the same payload in a format-1 container (plain JSON, full hashes) still decodes
    old = {k: v for k, v in header.items() if k not in ("weights", "payload", "images")}
    old.update(format=1, weights_sha256=weights_sha256(d), payload_sha256=hashlib.sha256(payload).hexdigest(),
               images_sha256=hashlib.sha256(x.numpy().tobytes()).hexdigest())
    blob = json.dumps(old).encode()
    v1 = MAGIC_V1 + len(blob).to_bytes(8, "little") + blob + payload
    assert torch.equal(decompress(d, v1), x)


def test_decompress_refuses_names_that_leave_the_folder(digits_run, tmp_path, capsys):
    from scorekit.cli import main
    from scorekit.data import digits
    from scorekit.run import load

    d = load(digits_run / "run")
    data, _ = compress(d, digits("test").images[:2], names=["ok.png", "../escaped.png"])
    (tmp_path / "f.skc").write_bytes(data)
    out = tmp_path / "out"
    assert main(["decompress", str(digits_run / "run"), str(tmp_path / "f.skc"), "--out", str(out),
                 "--no-progress"]) == 2
    assert "would be written outside --out" in capsys.readouterr().err
    assert not (tmp_path / "escaped.png").exists() and not out.exists()


def test_decompress_never_overwrites_and_writes_the_format_its_names_say(digits_run, tmp_path, capsys):
    """Stored names that collide (twice the same, the same but for case, images.npz) are written apart and said;
    an 8-bit image named .tif comes back as a TIFF; a name without an image suffix gets .png; a second decompress
    into the same folder is refused before anything is written. Before the fix the second a.png overwrote the
    first, images.npz replaced the stored image, and x.tif held PNG bytes."""
    import numpy as np
    from PIL import Image

    from scorekit.cli import main
    from scorekit.data import digits
    from scorekit.run import load

    d = load(digits_run / "run")
    x = digits("test").images[:6]
    names = ["a.png", "a.png", "images.npz", "A.PNG", "x.tif", "sub/noext"]
    data, _ = compress(d, x, names=names)
    (tmp_path / "f.skc").write_bytes(data)
    out = tmp_path / "out"
    args = ["decompress", str(digits_run / "run"), str(tmp_path / "f.skc"), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    said = capsys.readouterr().out
    written = ["a.png", "a-2.png", "images.npz.png", "A-3.PNG", "x.tif", "sub/noext.png"]
    for name, img in zip(written, x):
        with Image.open(out / name) as f:
            assert f.format == ("TIFF" if name.endswith(".tif") else "PNG"), name
            assert np.array_equal(np.asarray(f), img[0].numpy()), name
        if name != names[written.index(name)]:
            assert repr(name) in said, name
    assert np.array_equal(np.load(out / "images.npz")["images"], x.numpy())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(args) == 2
    assert "already holds" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_a_damaged_header_is_one_line_naming_the_file(digits_run, tmp_path, capsys):
    """The payload's hash does not cover the header: a header without count, or with chunks that do not add up,
    is refused in one line naming the file and the key (before the fix: an internal error)."""
    from scorekit.cli import main
    from scorekit.codec import read_header
    from scorekit.codec.fileformat import pack_header
    from scorekit.data import digits
    from scorekit.run import load

    d = load(digits_run / "run")
    data, _ = compress(d, digits("test").images[:3])
    header, payload = read_header(data)
    for key, value in (("count", None), ("chunks", [1, 1]), ("shape", [1, 8]), ("names", ["a.png"])):
        bad = {k: v for k, v in header.items() if k != key}
        if value is not None:
            bad[key] = value
        path = tmp_path / f"bad-{key}.skc"
        path.write_bytes(pack_header(bad) + payload)
        assert main(["decompress", str(digits_run / "run"), str(path), "--out", str(tmp_path / key),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and key in err and "internal" not in err, err
        assert not (tmp_path / key).exists()


def test_a_shorter_chain_codes_at_its_own_bound():
    """The exact Gaussian model coded on 20 of its 200 levels: the round trip is exact, the header says 20, the rate
    is within 3% of the respaced chain's bound (vlb_bpd of the same respacing), above the 200-level bound and
    above the data's entropy."""
    from scorekit.codec import coding_chain, read_header

    d = exact_denoiser(GaussianMixture.gaussian(M, S, 64), VPProcess.from_schedule("linear", 200, 1e-4, 0.1),
                       (1, 8, 8))
    u8, entropy = _gaussian_digits(48, seed=3)
    x = u8.float() / 127.5 - 1
    short = vlb_bpd(coding_chain(d, 20), x, ImageRNG(1, 48))["total"].mean().item()
    full = vlb_bpd(d, x, ImageRNG(1, 48))["total"].mean().item()
    data, rates = compress(d, u8, levels=20)
    assert read_header(data)[0]["levels"] == 20 and torch.equal(decompress(d, data), u8)
    assert abs(rates["bits_per_dim"] - short) < 0.03 * short and short > full - 0.05 and short > entropy - 0.1
    with pytest.raises(CodecError, match="--levels 201: choose 1..200"):
        compress(d, u8, levels=201)


def _coarse_gaussian(n: int, k: int, seed: int):
    """N(M, S^2) images rounded to the nearest of k grey levels spread evenly over 0..255 (uint8)."""
    from scorekit.codec.coder import even_values

    values = torch.tensor(even_values(k))
    x = M + S * torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = ((x + 1) * 127.5).clamp(0, 255)
    return values[(u[..., None] - values).abs().argmin(-1)].to(torch.uint8)


def test_the_chosen_chain_starts_where_the_data_quantisation_stops_mattering():
    """The exact Gaussian model (which knows nothing of the quantisation) of data on 9 grey levels, 200 levels: the
    chain of 20 levels chosen on 64 images starts above level 0 and its bound, measured on 48 other images, is lower
    than the evenly spread 20-level chain's by more than the estimates' noise; the codec on the chosen chain lands
    within 3% of that bound and writes the chain as its start and length."""
    from types import SimpleNamespace

    from scorekit.codec import coding_chain, read_header, search_chain
    from scorekit.codec.coder import even_values

    d = exact_denoiser(GaussianMixture.gaussian(M, S, 64), VPProcess.from_schedule("linear", 200, 1e-4, 0.1),
                       (1, 8, 8))
    d.config = SimpleNamespace(data=SimpleNamespace(values=even_values(9)))
    found = search_chain(d, _coarse_gaussian(64, 9, seed=1), 20)
    assert found["timesteps"][0] > 0 and len(found["timesteps"]) == 20 and found["timesteps"][-1] == 199
    assert found["bound_bpd"] == min(b for _, b in found["candidates"])
    u8 = _coarse_gaussian(48, 9, seed=2)
    x = u8.double() / 127.5 - 1
    chosen = vlb_bpd(coding_chain(d, timesteps=found["timesteps"]), x, ImageRNG(3, 48))["total"].mean().item()
    even = vlb_bpd(coding_chain(d, 20), x, ImageRNG(3, 48))["total"].mean().item()
    assert chosen < even - 0.3, (chosen, even)
    data, rates = compress(d, u8, timesteps=found["timesteps"])
    assert read_header(data)[0]["chain"] == [found["timesteps"][0], 20] and torch.equal(decompress(d, data), u8)
    assert abs(rates["bits_per_dim"] - chosen) < 0.03 * chosen, (rates, chosen)


def test_the_run_keeps_its_chosen_chain_for_its_weights(digits_run, tmp_path, monkeypatch, capsys):
    """compress chooses the run's chain once: RUN/codec_chain.json records it with the weights' hash, the next call
    reads it without searching, and another run's weights do not reuse it."""
    import json
    import shutil

    import scorekit.codec.chains as chains

    run = tmp_path / "run"
    shutil.copytree(digits_run / "run", run)
    assert main_cli(["compress", str(run), "digits:test", "--levels", "4", "--out", str(tmp_path / "a"),
                     "--no-progress"]) == 0
    kept = json.loads((run / "codec_chain.json").read_text())
    assert len(kept["chains"]["4"]["timesteps"]) == 4

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(chains, "search_chain", no_search)
    assert main_cli(["compress", str(run), "digits:test", "--levels", "4", "--out", str(tmp_path / "b"),
                     "--no-progress"]) == 0
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    shutil.copy(run / "codec_chain.json", digits_run / "other" / "codec_chain.json")
    capsys.readouterr()
    try:
        assert main_cli(["compress", str(digits_run / "other"), "digits:test", "--levels", "4", "--out",
                         str(tmp_path / "c"), "--no-progress"]) != 0
        assert "searched again" in capsys.readouterr().err
    finally:
        (digits_run / "other" / "codec_chain.json").unlink()


def test_compress_command_on_fewer_levels_without_names(digits_run, tmp_path, capsys):
    from scorekit.codec import read_header

    run = str(digits_run / "run")
    assert main_cli(["compress", run, "digits:test", "--levels", "5", "--chain", "even", "--no-names", "--out",
                     str(tmp_path / "f.skc"), "--no-progress"]) == 0
    header, _ = read_header((tmp_path / "f.skc").read_bytes())
    assert header["levels"] == 5 and "names" not in header and header["count"] == 300
    assert main_cli(["decompress", run, str(tmp_path / "f.skc"), "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    assert (tmp_path / "d" / "000299.png").is_file() and not (tmp_path / "d" / "test-00000.png").exists()
    assert main_cli(["compress", run, "digits:test", "--levels", "11", "--out", str(tmp_path / "g")]) == 2
    assert "--levels 11: choose 1..10" in capsys.readouterr().err and not (tmp_path / "g").exists()


def main_cli(argv):
    from scorekit.cli import main

    return main(argv)
