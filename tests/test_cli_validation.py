"""Every command, every numeric and choice option, bad values: exit code 2, one line naming the option, no
traceback and no file written. The bad values are derived from the ranges the options declare, so a new
option or command is covered as soon as it exists (and a bare ``type=int`` without a range fails here)."""

import argparse
import os

import numpy as np
import pytest

from scorekit.cli import COMMANDS, build_parser, main
from scorekit.cli.args import Number, device, existing_file, existing_path
from scorekit.training import train_run

TINY = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=16",
        "training.steps=2", "training.checkpoint_every=1", "process.num_timesteps=20", "sampling.steps=0",
        "training.snapshot_every=1"]

# A valid invocation of each command ({run}: a tiny DDPM run, {ncsn}: a tiny NCSN run, {tmp}: a scratch folder).
BASE = {
    "presets": [],
    "info": ["ddpm-digits"],
    "train": ["ddpm-digits", "--out", "{tmp}/new"],
    "sample": ["{run}"],
    "bpd": ["{run}"],
    "tune-schedule": ["{run}", "--steps", "3"],
    "fid-ref": ["digits", "--out", "{tmp}/stats.npz"],
    "eval": ["{run}"],
    "neighbours": ["{run}", "--data", "digits"],
    "interpolate": ["{run}"],
    "progressive": ["{run}"],
    "inpaint": ["{run}", "--data", "digits", "--mask", "half"],
    "plan-noise": ["digits"],
    "toy": ["langevin", "--out", "{tmp}/toy"],
    "convert": ["diffusers", "{tmp}", "--out", "{tmp}/converted"],
    "export": ["diffusers", "{run}", "--out", "{tmp}/exported"],
    "study": ["ema", "--out", "{tmp}/study"],
    "ema": ["{run}", "--sigma-rel", "0.1", "--out", "{tmp}/posthoc"],
    "classifier": ["ddpm-digits-cond", "--out", "{tmp}/classifier", "--steps", "2"],
    "distill": ["{run}", "--out", "{tmp}/student", "--steps", "1", "--no-eval"],
    "compress": ["{run}", "digits:test", "--out", "{tmp}/c.skc"],
    "decompress": ["{run}", "{tmp}/c.skc", "--out", "{tmp}/d"],
    "hype create": ["{run}", "--data", "digits", "--out", "{tmp}/study"],
    "hype serve": ["{tmp}"],
    "hype raters": ["{tmp}"],
    "hype report": ["{tmp}"],
    "hype export": ["{tmp}", "--csv"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    train_run("ddpm-digits", root / "run", TINY, device="cpu", progress=False, evaluate=False)
    train_run("ncsnv2-digits", root / "ncsn", ["model.ngf=8", "training.batch_size=16", "training.steps=1",
                                                "process.num_levels=4"], device="cpu", progress=False, evaluate=False)
    return root


def _subparsers(parser: argparse.ArgumentParser | None = None, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser by its name, nested ones as "hype create"."""
    out = {}
    action = next(a for a in (parser or build_parser())._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in action.choices.items():
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            out.update(_subparsers(sub, f"{prefix}{name} "))
        else:
            out[f"{prefix}{name}"] = sub
    return out


def bad_values(action: argparse.Action) -> list[str]:
    """Values the option must refuse: outside its declared range, of the wrong type, or not one of its choices."""
    t = action.type
    if action.choices is not None:
        return ["no-such-choice", "2"]
    if isinstance(t, Number):
        out = ["abc", "1e400" if t.kind is float else "1.5"]
        if t.lo is not None:
            out.append(f"{t.lo:g}" if t.open_lo else str(t.kind(t.lo) - 1))
        if t.hi is not None:
            out.append(str(t.kind(t.hi) * 10 + 1))
        return out
    if getattr(t, "allowed", None):  # choice_list
        return [f"{t.allowed[0]},no-such-choice", ""]
    if t in (existing_file, existing_path):
        return ["/no/such/file.pth"]
    if t is device:
        return ["no-such-device", "cuda:99"]
    return []


def option_cases():
    cases = []
    for name, parser in _subparsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.nargs == 0:
                continue
            for value in bad_values(action):
                cases.append((name, action, value))
    return cases


def snapshot(*folders) -> set:
    return {(str(p), p.stat().st_size) for f in folders for p in f.rglob("*")}


def _argv(name: str, runs, tmp) -> list[str]:
    return [a.format(run=runs / "run", ncsn=runs / "ncsn", tmp=tmp) for a in BASE[name]]


def test_every_command_has_a_valid_base_invocation_and_the_common_options():
    assert set(BASE) == set(_subparsers()) and {n.split()[0] for n in BASE} == {name for name, *_ in COMMANDS}
    for name, parser in _subparsers().items():
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"--no-progress", "--debug", "--help"} <= flags, name


def test_numeric_options_declare_their_range():
    for name, parser in _subparsers().items():
        for action in parser._actions:
            assert action.type not in (int, float) or action.choices is not None, (
                f"scorekit {name} {action.option_strings}: declare the valid range with cli.args.Number")


@pytest.mark.parametrize("name,action,value", option_cases(),
                         ids=lambda v: v if isinstance(v, str) else "/".join(getattr(v, "option_strings", [])) or
                         getattr(v, "dest", "?"))
def test_bad_option_values_exit_2_with_one_line_and_write_nothing(name, action, value, runs, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = _argv(name, runs, tmp_path)
    words = name.split()
    if action.option_strings:
        bad = [action.option_strings[0], value] + (["1"] * (action.nargs - 1) if isinstance(action.nargs, int) else [])
        argv = [*words, *base, *bad]
    else:  # a positional argument: replace its value in the base invocation
        position = [a.dest for a in _subparsers()[name]._actions if not a.option_strings].index(action.dest)
        argv = [*words, *base]
        argv[len(words) + position] = value
    before = snapshot(tmp_path, runs)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    culprit = action.option_strings[0] if action.option_strings else action.metavar or action.dest
    assert culprit in lines[0] or action.dest in lines[0], lines[0]
    assert snapshot(tmp_path, runs) == before, f"{argv} wrote files"


def _stats(path, dim):
    np.savez(path, mu=np.zeros(dim), sigma=np.eye(dim))
    return str(path)


# Values that parse but are wrong for the data, the run or the file system: refused before any work.
SEMANTIC = [
    (["sample", "{run}", "--steps", "500", "--sampler", "ancestral"], "at most 20"),
    (["sample", "{run}", "--out", "{tmp}/afile"], "exists and is not a folder"),
    (["sample", "{tmp}/no-run"], "no such run directory"),
    (["eval", "{run}", "--ref", "{tmp}/wrong.npz"], "gives 128-d features"),
    (["eval", "{run}", "--ref", "{tmp}/nope.npz"], "statistics file not found"),
    (["eval", "{run}", "--ref", "{tmp}/right.npz", "--metrics", "kid"], "needs the reference images' features"),
    (["eval", "{run}", "--ref", "{tmp}/no-folder"], "not `digits`, a preset"),
    (["eval", "{run}", "--steps", "21", "--sampler", "ancestral"], "at most 20"),
    (["bpd", "{ncsn}"], "computed for VP and sub-VP runs"),
    (["tune-schedule", "{run}", "--steps", "30", "--sampler", "ancestral"], "at most 20"),
    (["tune-schedule", "{run}", "--steps", "3", "--sampler", "rk45"], "has no step schedule to search"),
    (["tune-schedule", "{run}/checkpoints", "--steps", "3"], "needs a run directory"),
    (["neighbours", "{run}", "--data", "{tmp}/no-folder"], "not `digits`, a preset"),
    (["neighbours", "{tmp}/s.npz", "--data", "digits"], "no such samples file"),
    (["neighbours", "{run}", "--data", "digits", "--k", "99"], None),  # fine: 1497 training digits
    (["interpolate", "{run}", "--pair", "0", "5000"], "the split holds 300 images"),
    (["interpolate", "{run}", "--t", "3", "20"], "the model's levels are 0..19"),
    (["progressive", "{run}", "--snapshots", "21"], "the chain has only 20 steps"),
    (["progressive", "{ncsn}"], "DDPM (VP) figures"),
    (["inpaint", "{run}", "--data", "digits", "--mask", "{tmp}/no-mask.png"], "no-mask.png"),
    (["inpaint", "{run}", "--data", "digits", "--mask", "half", "--n", "301"], "holds only 300 images"),
    (["inpaint", "{run}", "--data", "digits", "--mask", "half", "--steps", "21"], "at most 20"),
    (["plan-noise", "digits", "--sigma-end", "50"], "must be in (0, sigma_1)"),
    (["plan-noise", "digits", "--write", "{tmp}/p.yaml"], "needs DATA to be a preset or YAML config"),
    (["plan-noise", "ncsnv2-digits", "--write", "{tmp}/p.txt"], "expected a .yaml file"),
    (["train", "ddpm-cifar10", "data.path={tmp}/no-cifar", "--out", "{tmp}/c"], "CIFAR-10 folder not found"),
    (["train", "ddpm-digits", "--out", "{tmp}/afile"], "exists and is not a folder"),
    (["train", "ddpm-digits", "training.steps=-1", "--out", "{tmp}/c"], "training.steps: must be > 0"),
    (["train", "ddpm-digits", "sampling.sampler=nope"], "sampling.sampler: 'nope' is not one of"),
    (["info", "{tmp}/no-such.yaml"], "does not exist"),
    (["fid-ref", "{tmp}/no-folder", "--out", "{tmp}/s.npz"], "not `digits`, a preset"),
    (["fid-ref", "digits", "--out", "{tmp}/afile"], "exists and is not a folder"),
    (["convert", "diffusers", "{tmp}", "--out", "{tmp}/c"], "expected unet/config.json"),
    (["convert", "ncsnv2", "{tmp}/afile", "--out", "{tmp}/c"], "needs --preset"),
    (["export", "diffusers", "{ncsn}", "--out", "{tmp}/e"], "is the VP (DDPM) process"),
    (["toy", "langevin", "--out", "{tmp}/afile"], "exists and is not a folder"),
    (["hype", "create", "{run}", "--data", "digits", "--out", "{tmp}/s", "--per-rater", "7"], "must be even"),
    (["hype", "create", "{run}", "--data", "digits", "--out", "{tmp}/s", "--n-real", "1497"], "1492 or fewer"),
    (["hype", "create", "{run}", "--data", "digits", "--out", "{tmp}/s", "--n-fake", "10"], "needs 50 fake"),
    (["hype", "create", "{run}", "--data", "digits", "--out", "{tmp}"], "not an empty folder"),
    (["hype", "serve", "{tmp}"], "not a HYPE study"),
    (["study", "ema", "--out", "{tmp}/afile"], "exists and is not a folder"),
    (["study", "ema", "--out", "{tmp}/s", "--steps", "3"], "--checkpoints 5: more than the 3 training steps"),
    (["study", "ema", "--out", "{tmp}/s", "training.ema_decay=0"], "has no EMA"),
    (["study", "ema", "--out", "{tmp}/s", "--base", "nope"], "unknown preset 'nope'"),
    (["study", "ema", "--out", "{tmp}/s", "training.nope=1"], "unknown key training.nope"),
    (["hype", "report", "{run}"], "not a HYPE study"),
    (["compress", "{ncsn}", "digits:test", "--out", "{tmp}/c.skc"], "codes DDPM (VP) runs"),
    (["compress", "{run}", "{tmp}/nope.png", "--out", "{tmp}/c.skc"], "no such file or folder"),
    (["compress", "{run}", "{tmp}/afile", "--out", "{tmp}/c.skc"], "not a readable image"),
    (["compress", "{run}", "digits:valid", "--out", "{tmp}/c.skc"], "expected digits:train or digits:test"),
    (["compress", "{run}", "digits:test", "--out", "{tmp}"], "is a folder"),
    (["decompress", "{run}", "{tmp}/afile", "--out", "{tmp}/d"], "not a scorekit compressed file"),
    (["decompress", "{run}", "{tmp}/right.npz", "--out", "{tmp}/afile"], "exists and is not a folder"),
]


@pytest.mark.parametrize("argv,message", SEMANTIC, ids=lambda v: " ".join(v[:3]) if isinstance(v, list) else None)
def test_bad_inputs_are_refused_before_any_work(argv, message, runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _stats(tmp_path / "wrong.npz", 2048)
    _stats(tmp_path / "right.npz", 128)
    (tmp_path / "afile").write_text("not a folder")
    argv = [a.format(run=runs / "run", ncsn=runs / "ncsn", tmp=tmp_path) for a in argv]
    if message is None:  # a control: the same kind of invocation succeeds
        assert main(argv + ["--no-progress", "--n", "2", "--out", str(tmp_path / "ok.png")]) == 0
        return
    before = snapshot(tmp_path, runs)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert snapshot(tmp_path, runs) == before


def test_an_internal_error_is_one_line_with_the_traceback_saved(monkeypatch, capsys, tmp_path):
    import scorekit.cli.basic as basic

    def broken(args):
        raise RuntimeError("something deep inside torch\nwith a second line")

    monkeypatch.setattr(tempfile_dir := __import__("tempfile"), "tempdir", str(tmp_path))
    for i, (name, *rest) in enumerate(COMMANDS):
        if name == "presets":
            COMMANDS[i] = (name, rest[0], rest[1], broken)
    try:
        assert main(["presets"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "internal error: RuntimeError: something deep inside torch" in err
        saved = err.split("full traceback in ")[1].split(";")[0]
        assert saved.startswith(tempfile_dir.gettempdir()) and "Traceback" in open(saved).read()
        assert main(["presets", "--debug"]) == 1
        assert "Traceback (most recent call last)" in capsys.readouterr().err
        monkeypatch.setenv("SCOREKIT_DEBUG", "1")
        assert main(["presets"]) == 1
        assert "Traceback (most recent call last)" in capsys.readouterr().err
    finally:
        for i, (name, *rest) in enumerate(COMMANDS):
            if name == "presets":
                COMMANDS[i] = (name, rest[0], rest[1], basic.cmd_presets)


def test_only_rank_0_prints_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert main(["presets"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["presets"]) == 0
    assert "ddpm-cifar10" in capsys.readouterr().out


def test_piped_progress_is_a_few_plain_lines(tmp_path):
    """The training bar on a pipe: one line per log_every steps, no carriage returns."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "scorekit", "train", "ddpm-digits", "--out", str(tmp_path / "r"),
                           "--no-eval", *TINY[:-4], "training.steps=20", "training.log_every=5",
                           "process.num_timesteps=20", "sampling.steps=0", "training.checkpoint_every=100"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train:")]
    assert [line.split()[1] for line in lines] == ["5/20", "10/20", "15/20", "20/20"]
    assert all("loss=" in line and "elapsed" in line for line in lines)
