"""The command line, in process: outputs, --help everywhere, and one-line errors with exit code 2."""

import argparse
import json

import numpy as np
import pytest

from scorekit.cli import COMMANDS, main
from scorekit.training import train_run

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


def _all_parsers(parser, name="scorekit"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sp in action.choices.items():
                yield f"{name} {sub}", sp
                yield from _all_parsers(sp, f"{name} {sub}")


def test_every_option_of_every_command_has_help_and_descriptions_are_not_indented():
    from scorekit.cli import build_parser

    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) >= 27  # every command and every hype subcommand
    for name, parser in parsers:
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest}: no help text"
        rest = [line for line in (parser.description or "").splitlines()[1:] if line.strip()]
        assert not rest or min(len(line) - len(line.lstrip()) for line in rest) == 0, f"{name}: description indented"


def test_top_level_help_lists_every_study(capsys):
    from scorekit.studies import STUDIES

    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert len(STUDIES) >= 6 and all(name in out for name in STUDIES)


def test_an_unknown_key_suggests_the_closest_one(capsys):
    assert main(["train", "ddpm-digits", "training.stepz=3"]) == 2
    assert "did you mean training.steps?" in capsys.readouterr().err
    assert main(["info", "ddpm-digits", "modle.ch=3"]) == 2
    assert "did you mean 'model'?" in capsys.readouterr().err


def test_sample_names_the_grid_file_and_scores_the_digits_by_default(run, tmp_path, capsys):
    assert main(["sample", str(run), "--out", str(tmp_path / "x.png"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"grid {tmp_path / 'x.png'}" in out and str(tmp_path / "x_samples.npz") in out
    assert "256 samples" in out and "not reported" not in out and "proxy FD (256 samples" in out
    assert np.load(tmp_path / "x_samples.npz")["samples"].shape[0] == 256
    assert main(["sample", str(run), "--n", "10", "--out", str(tmp_path / "y"), "--no-progress"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "not reported" in line]
    assert lines == ["proxy FD and IS: not reported for 10 samples (they need 128 or more: --n 128)"]


def test_the_main_job_reports_its_times_apart_and_saves_what_it_scored(tmp_path, capsys):
    run = tmp_path / "job"
    overrides = [o for o in TINY if not o.startswith("eval.")] + ["eval.bpd_images=3", "eval.proxy_samples=130"]
    assert main(["train", "ddpm-digits", "--out", str(run), "--no-progress", "--device", "cpu", *overrides]) == 0
    out = capsys.readouterr().out
    assert f"trained {run} to step 4: training " in out and "(4 steps), sampling " in out and ", bound " in out
    summary = json.loads((run / "summary.json").read_text())
    assert {"train_s", "sampling_s", "bpd_s"} <= set(summary) and summary["trained_steps"] == 4
    assert summary["n_samples"] == summary["proxy"]["n"] == 130
    assert np.load(run / "samples" / "final" / "samples.npz")["samples"].shape[0] == 130
    assert len(list((run / "samples" / "final" / "images").glob("*.png"))) == 130


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
