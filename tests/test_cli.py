"""The command line, in process: outputs, --help everywhere, and one-line errors with exit code 2."""

import json

import numpy as np
import pytest

from scorekit.cli import COMMANDS, main
from scorekit.train import train_run

TINY = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=16",
        "training.steps=4",
        "training.warmup=2", "training.ema_decay=0.9", "process.num_timesteps=50", "sampling.steps=0",
        "sampling.num_samples=4", "eval.bpd_images=0", "eval.proxy_samples=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "run"
    train_run("ddpm-digits", path, TINY, device="cpu", progress=False, evaluate=False)
    return path


def test_help_for_every_command(capsys):
    for name, *_ in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: scorekit" in capsys.readouterr().out


def test_presets_and_info(capsys):
    assert main(["presets"]) == 0
    assert "ddpm-cifar10" in capsys.readouterr().out
    assert main(["info", "ddpm-cifar10", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 35_746_307 and info["family"] == "ddpm"
    assert main(["info", "ddpm-lsun-church"]) == 0
    assert "113,673,219" in capsys.readouterr().out


def test_sample_writes_grid_pngs_and_npz_independent_of_batch_size(run, tmp_path, capsys):
    assert main(["sample", str(run), "--n", "6", "--batch-size", "6", "--out", str(tmp_path / "a"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "proxy FD" in out and "grid.png" in out
    assert main(["sample", str(run), "--n", "6", "--batch-size", "4", "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 0
    a = np.load(tmp_path / "a" / "samples.npz")["samples"]
    b = np.load(tmp_path / "b" / "samples.npz")["samples"]
    assert a.shape == (6, 8, 8, 1) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float reductions may differ by one level
    assert (tmp_path / "a" / "grid.png").is_file() and len(list((tmp_path / "a" / "images").glob("*.png"))) == 6


def test_bpd_command(run, capsys):
    assert main(["bpd", str(run), "--n", "4", "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 4 and 0 < res["bpd"] < 30


@pytest.mark.parametrize("argv,message", [
    (["train", "ddpm-nope"], "unknown preset 'ddpm-nope'"),
    (["train", "ddpm-digits", "training.lrr=1"], "unknown key training.lrr"),
    (["train", "ddpm-cifar10", "data.path=/no/such/folder", "training.steps=1"],
     "/no/such/folder: CIFAR-10 folder not found"),
    (["sample", "/no/such/run"], "/no/such/run: no such run directory or checkpoint"),
    (["info", "missing.yaml"], "missing.yaml does not exist"),
])
def test_errors_are_one_line_with_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
