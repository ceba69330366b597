"""fid-ref / eval / neighbours / interpolate / progressive through the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from scorekit.cli import main
from scorekit.data import digits
from scorekit.training import train_run

TINY = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=16",
        "training.warmup=2", "training.ema_decay=0.9", "process.num_timesteps=40", "sampling.steps=0",
        "training.checkpoint_every=2", "training.keep_checkpoints=5", "eval.bpd_images=0", "eval.proxy_samples=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "run"
    train_run("ddpm-digits", path, TINY + ["training.steps=4"], device="cpu", progress=False, evaluate=False)
    return path


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    for i, img in enumerate(digits("test").images[:60]):
        Image.fromarray(img[0].numpy()).save(folder / f"{i:03d}.png")
    return folder


PROTOCOL = {"n", "seed", "per_image_seed", "reference", "extractor", "is_splits", "kid", "pr", "sampler", "steps",
            "sampler_options", "checkpoint", "checkpoint_step", "ema", "processes", "batch_size", "precision",
            "classes", "guidance", "classifier_scale", "scorekit", "torch", "date", "judges", "on_values"}


def test_fid_ref_then_eval_on_a_folder_of_pngs(run, png_folder, tmp_path, capsys):
    stats = tmp_path / "ref.npz"
    assert main(["fid-ref", str(png_folder), "--out", str(stats), "--resolution", "8", "--channels", "1",
                 "--extractor", "digits-proxy"]) == 0
    with np.load(stats) as f:
        assert f["mu"].shape == (128,) and f["sigma"].shape == (128, 128) and int(f["n"]) == 60
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--n", "24", "--ref", str(stats), "--metrics", "fid,is", "--is-splits", "2",
                 "--no-progress", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["protocol"]) == PROTOCOL
    assert res["protocol"]["extractor"]["name"] == "digits-proxy" and res["protocol"]["checkpoint_step"] == 4
    assert res["protocol"]["ema"] is True and res["protocol"]["reference"]["n"] == 60
    # 24 samples are below the reporting rule (FD: 128 = the proxy's feature dimension; IS: 100 per split)
    m = res["metrics"]
    assert m["fid"] is None and m["is"] is None and "N = 24 < 128" in m["too_few_samples"]["fid"]
    assert "N = 24 < 200" in m["too_few_samples"]["is"]
    assert m["values_below_min_n"]["fid"] > 0 and 1 <= m["values_below_min_n"]["is"] <= 10
    assert "fid not reported (N = 24 < 128" in capsys.readouterr().out
    # KID and PR need the reference's features: with a stats file the error says so
    assert main(["eval", str(run), "--n", "8", "--ref", str(stats), "--metrics", "kid", "--no-progress"]) == 2
    assert "needs the reference images' features" in capsys.readouterr().err
    # with the folder itself as the reference every metric is available
    assert main(["eval", str(run), "--n", "24", "--ref", str(png_folder), "--resolution", "8", "--channels", "1",
                 "--metrics", "fid,kid,pr", "--no-progress", "--out", str(tmp_path / "all.json")]) == 0
    both = json.loads((tmp_path / "all.json").read_text())
    m = both["metrics"]
    assert {"fid", "kid", "kid_std", "precision", "recall", "hog_fd"} <= set(m)
    assert m["values_below_min_n"]["fid"] == pytest.approx(res["metrics"]["values_below_min_n"]["fid"], rel=1e-9)
    # the second judge beside the proxy, against the same reference images: the HOG FD of the same 24 samples
    from scorekit.evaluation.generate import generate
    from scorekit.metrics.frechet import feature_stats, frechet_distance
    from scorekit.metrics.hog import hog_features
    from scorekit.run import load

    assert both["protocol"]["judges"][0]["extractor"]["name"] == "digits-hog"
    assert m["hog_fd"] is None and m["too_few_samples"]["hog_fd"].startswith("N = 24 < 100")  # 96-d: 100 samples
    ref = torch.from_numpy(np.stack([np.asarray(Image.open(png_folder / f"{i:03d}.png")) for i in range(60)])[:, None])
    samples = generate(load(run), 24, seed=0)
    want = frechet_distance(*feature_stats(hog_features(samples)), *feature_stats(hog_features(ref)))
    assert m["values_below_min_n"]["hog_fd"] == pytest.approx(want, rel=1e-6)


def test_eval_is_identical_with_one_and_two_processes(run, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["eval", str(run), "--num-samples", "20", "--batch-size", "4", "--metrics", "fid,is", "--is-splits", "2",
            "--no-progress", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "scorekit", *args, "--out", str(tmp_path / "one.json")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "scorekit", *args, "--out", str(tmp_path / "two.json")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("protocol and metrics ->") == 1  # only rank 0 prints
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert a["metrics"] == b["metrics"]
    assert (a["protocol"]["processes"], b["protocol"]["processes"]) == (1, 2)


def test_checkpoint_selection_writes_csv_and_plot(run, tmp_path, capsys):
    out = tmp_path / "sweep" / "eval.json"
    assert main(["eval", str(run), "--checkpoints", "all", "--n", "16", "--metrics", "fid", "--no-progress",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    steps = [c["protocol"]["checkpoint_step"] for c in res["checkpoints"]]
    assert steps == [2, 4] and res["best"]["step"] in steps
    assert res["best"]["fid"] == min(c["metrics"]["values_below_min_n"]["fid"] for c in res["checkpoints"])
    csv_lines = (tmp_path / "sweep" / "eval_checkpoints.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,") and len(csv_lines) == 3
    assert (tmp_path / "sweep" / "eval_checkpoints.png").stat().st_size > 1000


def test_figures(run, tmp_path, capsys):
    assert main(["neighbours", str(run), "--data", "digits", "--n", "4", "--k", "3",
                 "--out", str(tmp_path / "nb.png")]) == 0
    assert main(["interpolate", str(run), "--lambdas", "5", "--t", "9", "19", "--out", str(tmp_path / "i.png")]) == 0
    assert main(["progressive", str(run), "--n", "3", "--snapshots", "4", "--rd-images", "6",
                 "--out", str(tmp_path / "prog")]) == 0
    out = capsys.readouterr().out
    assert "rate-distortion on 6 test images" in out
    for f in ("nb.png", "i.png", "prog/progressive.png", "prog/rate_distortion.png"):
        assert (tmp_path / f).stat().st_size > 500
    lines = (tmp_path / "prog" / "rate_distortion.csv").read_text().splitlines()
    assert len(lines) == 41 and lines[0] == "t,rate_bits_per_dim,distortion_rmse_0_255"
    rates = [float(x.split(",")[1]) for x in lines[1:]]
    assert rates == sorted(rates, reverse=True)  # the rate only grows as the decoder goes from T to 1


def test_rate_distortion_total_equals_the_bound():
    """rate at t = 1 plus the decoder term is the whole variational bound, as vlb_bpd computes it."""
    import torch

    from scorekit.evaluation.figures import rate_distortion
    from scorekit.evaluation.likelihood import vlb_bpd
    from scorekit.processes import VPProcess
    from scorekit.rng import ImageRNG
    from scorekit.toy import GaussianMixture, exact_denoiser

    d = exact_denoiser(GaussianMixture.gaussian(0.0, 0.5, 4), VPProcess.from_schedule("linear", 50), (1, 2, 2))
    u8 = (torch.rand(6, 1, 2, 2) * 255).to(torch.uint8)
    rd = rate_distortion(d, u8, seed=3)
    ref = vlb_bpd(d, u8.float() / 127.5 - 1, ImageRNG(3, 6))["total"].mean().item()
    assert rd["total_bpd"] == pytest.approx(ref, rel=1e-6)
