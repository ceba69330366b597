"""Class-conditional training and sampling through the library and the command line."""

import json

import numpy as np
import pytest
import torch

from scorekit.cli import main
from scorekit.config import load_config
from scorekit.data import digits
from scorekit.images import from_uint8
from scorekit.run import load
from scorekit.training import train_run

TINY = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=32",
        "process.num_timesteps=100", "sampling.steps=0", "eval.proxy_samples=0", "sampling.num_samples=10"]


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("cond") / "run"
    train_run("ddpm-digits-cond", path, TINY + ["training.steps=300", "training.label_dropout=0.5"], device="cpu",
              progress=False, evaluate=False)
    return path


def test_a_label_dropout_run_learns_both_the_conditional_and_the_unconditional_model(cond_run):
    """The same network, asked with the true label, with no label and with a wrong one: the true label
    predicts the noise best, no label next (it learnt the unconditional model too), a wrong label worst."""
    d = load(cond_run, ema=False)
    test = digits("test")
    x0 = from_uint8(test.images, d.data_range)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=g)
    t = torch.full((len(x0),), 30)  # a mid level where the label matters
    x_t = d.process.q_sample(x0, t, eps)
    err = {}
    with torch.no_grad():
        for name, y in (("true", test.labels), ("none", torch.full_like(test.labels, 10)),
                        ("wrong", (test.labels + 5) % 10)):
            err[name] = float(((d(x_t, t, y=y).eps - eps) ** 2).mean())
    assert err["true"] < err["none"] < err["wrong"], err
    assert json.loads((cond_run / "classes.json").read_text())["names"] == [str(i) for i in range(10)]


def test_sample_draws_classes_with_guidance(cond_run, tmp_path, capsys):
    assert main(["sample", str(cond_run), "--n", "6", "--class", "3,7", "--guidance", "2", "--out",
                 str(tmp_path / "s"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["classes"] == [3, 7, 3, 7, 3, 7] and summary["guidance"] == 2.0
    # guided image i is the same whatever the batch (classes travel with their images)
    assert main(["sample", str(cond_run), "--n", "6", "--class", "3,7", "--guidance", "2", "--batch-size", "4",
                 "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    a, b = (np.load(tmp_path / f / "samples.npz")["samples"].astype(int) for f in ("s", "b"))
    assert np.abs(a - b).max() <= 1


@pytest.mark.parametrize("argv,message", [
    (["--class", "10"], "--class 10: out of range; this model has classes 0..9"),
    (["--guidance", "2"], "--guidance: needs --class"),
    (["--class", "1", "--classifier-scale", "2"], "--classifier-scale: needs --classifier DIR"),
])
def test_bad_class_requests(cond_run, argv, message, capsys, tmp_path):
    assert main(["sample", str(cond_run), "--n", "2", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_class_on_an_unconditional_run_is_refused(tmp_path, capsys):
    run = tmp_path / "u"
    train_run("ddpm-digits", run, TINY + ["training.steps=1"], device="cpu", progress=False, evaluate=False)
    assert main(["sample", str(run), "--class", "3", "--n", "2", "--out", str(tmp_path / "x")]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_conditional_presets_and_folder_classes(tmp_path):
    from PIL import Image

    from scorekit.data.sources import Files

    assert load_config("ddpm-digits-cond").model.num_classes == 10
    for cls in ("cat", "ant"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    f = Files(tmp_path, 8, 1)
    assert f.class_names == ["ant", "cat"] and f.labels.tolist() == [0, 0, 1, 1]


def test_per_class_metrics_agree_with_a_hand_count_and_the_closed_form_fd():
    """Agreement is the share of argmax hits per class and overall; FD per class is computed against that class's
    reference images only: a copy of class 0's reference shifted by delta has FD ||delta||^2 (same covariance),
    an exact copy of class 1's has FD 0, whatever the other class does."""
    from scorekit.evaluation.quality import Reference, per_class_metrics

    rng = np.random.default_rng(0)
    ref0, ref1 = rng.normal(size=(400, 6)), rng.normal(size=(400, 6)) + 30.0
    ref = Reference("toy", 800, np.zeros(6), np.eye(6), np.concatenate([ref0, ref1]), np.repeat([0, 1], 400))
    delta = np.array([1.0, 2.0, 0, 0, 0, 0])
    feats = np.concatenate([ref0 + delta, ref1])
    labels = np.repeat([0, 1], 400)
    logits = np.zeros((800, 2))
    logits[np.arange(800), labels] = 1.0
    logits[:100, 1] = 2.0  # a quarter of class 0 judged as 1
    out = per_class_metrics(feats, logits, labels, ref)
    assert out["agreement"] == pytest.approx(700 / 800)
    assert out["per_class"][0]["agreement"] == pytest.approx(0.75) and out["per_class"][1]["agreement"] == 1.0
    assert out["per_class"][0]["fd"] == pytest.approx(5.0, abs=1e-6)
    assert out["per_class"][1]["fd"] == pytest.approx(0.0, abs=1e-6)
    assert out["per_class"][0]["n"] == out["per_class"][0]["reference_n"] == 400


def test_eval_per_class_reports_every_asked_class(cond_run, tmp_path, capsys):
    """`scorekit eval --class all --per-class` samples an equal share of every class and reports agreement and FD
    per class (the digits proxy is the judge)."""
    assert main(["eval", str(cond_run), "--n", "40", "--class", "all", "--per-class", "--guidance", "2",
                 "--steps", "10", "--out", str(tmp_path / "e.json"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    m = res["metrics"] if "metrics" in res else res["results"][0]["metrics"]
    assert sorted(int(c) for c in m["per_class"]) == list(range(10))
    assert all(r["n"] == 4 and 0.0 <= r["agreement"] <= 1.0 for r in m["per_class"].values())
    hits = sum(r["agreement"] * r["n"] for r in m["per_class"].values())
    assert m["agreement"] == pytest.approx(hits / 40)
    assert "FD per class" in capsys.readouterr().out
