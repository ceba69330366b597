"""Faults during training lose nothing: a full disk or a read-only run folder while a checkpoint or a post-hoc
EMA snapshot is written stops the run with one line naming the path and the cause, the previous checkpoint stays
intact and loadable, and `scorekit train RUN` resumes bit-exactly once the fault is gone. Also: a damaged newest
checkpoint is refused with the name of the older intact one, and files are written with the umask's mode."""

import contextlib
import errno
import json
import os
import stat
import subprocess

import pytest
import torch
from test_train import TINY, _assert_same_state, _latest, _train

import scorekit.checkpoint
import scorekit.training.logger
import scorekit.training.loop
from scorekit.checkpoint import load_checkpoint
from scorekit.cli import main
from scorekit.errors import WriteError
from scorekit.run import RunDir

RECIPE = TINY + ["training.steps=6", "training.checkpoint_every=2", "training.keep_checkpoints=1",
                 "training.snapshot_every=2", "model.dropout=0.1"]


def _cli_train(run, *overrides) -> int:
    return main(["train", "ddpm-digits", "--out", str(run), "--device", "cpu", "--no-progress", "--no-eval",
                 *RECIPE, *overrides])


def _fail_on_call(monkeypatch, module, name, call: int, err: int):
    """Make the ``call``-th call of ``module.name`` write part of its file and then fail with ``err``."""
    real, calls = getattr(module, name), []

    def flaky(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == call:
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)  # half a file, as a full disk leaves it
            raise OSError(err, os.strerror(err))
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(module, name, flaky)
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same 6 steps without any fault."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert _cli_train(run) == 0
    return run


def _steps(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _check_stopped_then_resume(run, capsys, reference, stopped_at: int, intact_step: int, cause: str, path_part: str):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"stopped at step {stopped_at}" in err and cause in err and path_part in err, err
    assert f"checkpoint of step {intact_step}" in err and f"scorekit train {run}" in err, err
    r = RunDir(run)
    assert [s for s, _ in r.checkpoints()] == [intact_step]
    assert load_checkpoint(r.latest()).step == intact_step  # intact and loadable
    assert not list(r.checkpoint_dir.rglob(".*.tmp-*"))  # no half-written file left behind
    assert main(["train", str(run), "--no-progress", "--no-eval", "--device", "cpu"]) == 0  # space is back
    _assert_same_state(_latest(run), _latest(reference))
    assert _steps(run) == _steps(reference)  # the replayed steps are logged once


@pytest.mark.parametrize("err,cause,call,path_part", [
    (errno.ENOSPC, "No space left on device", 5, "step_000000004.safetensors"),
    (errno.EROFS, "Read-only file system", 4, "guide.safetensors")], ids=["full-disk", "read-only-guide"])
def test_a_fault_while_a_checkpoint_is_written(tmp_path, monkeypatch, capsys, reference, err, cause, call, path_part):
    # save_file's calls: snapshot 2, checkpoint 2, snapshot 4, the kept autoguidance guide (training.guide_at 0.6 of
    # 6 steps: step 4), checkpoint 4; the fault hits the checkpoint or the guide, and the resumed run rewrites both
    _fail_on_call(monkeypatch, scorekit.checkpoint, "save_file", call=call, err=err)
    run = tmp_path / "run"
    assert _cli_train(run) == 2
    monkeypatch.undo()
    _check_stopped_then_resume(run, capsys, reference, 4, 2, cause, path_part)
    assert RunDir(run).guide_path.read_bytes() == RunDir(reference).guide_path.read_bytes()


def test_a_full_disk_while_a_post_hoc_ema_snapshot_is_written(tmp_path, monkeypatch, capsys, reference):
    # save_file's calls: snapshot 2, checkpoint 2, snapshot 4 (fails)
    _fail_on_call(monkeypatch, scorekit.checkpoint, "save_file", call=3, err=errno.ENOSPC)
    run = tmp_path / "run"
    assert _cli_train(run) == 2
    monkeypatch.undo()
    _check_stopped_then_resume(run, capsys, reference, 4, 2, "No space left on device", "phema_000000004.safetensors")


def test_a_full_disk_while_metrics_are_logged(tmp_path, monkeypatch, capsys, reference):
    run = tmp_path / "run"
    real_log = scorekit.training.logger.MetricsLogger.log

    def log(self, step, values):
        if step == 3:
            raise WriteError(f"{self.run.metrics_path}: could not be written (No space left on device)")
        return real_log(self, step, values)

    monkeypatch.setattr(scorekit.training.logger.MetricsLogger, "log", log)
    assert _cli_train(run) == 2
    monkeypatch.undo()
    _check_stopped_then_resume(run, capsys, reference, 3, 2, "No space left on device", "metrics.jsonl")


# ----- the same on a real file system: a small tmpfs that fills up, then one remounted read-only ----------------

@contextlib.contextmanager
def _tmpfs(folder, size_kb: int):
    folder.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); the injected-fault tests above cover the same paths")
    try:
        yield lambda options: subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _checkpoint_kb(reference) -> int:
    n = sum(v.numel() * v.element_size() for v in _latest(reference).model.values())
    return 4 * n // 1024  # weights, EMA, Adam's two moments


def test_a_real_full_disk(tmp_path, capsys, reference):
    kb = _checkpoint_kb(reference)
    mount = tmp_path / "small"
    with _tmpfs(mount, size_kb=int(1.5 * kb)) as remount:  # one checkpoint fits, not a second beside it
        run = mount / "run"
        assert _cli_train(run, "training.snapshot_every=0") == 2
        err = capsys.readouterr().err
        assert "No space left on device" in err and "stopped at step" in err, err
        steps = [s for s, _ in RunDir(run).checkpoints()]
        assert len(steps) == 1 and load_checkpoint(RunDir(run).latest()).step == steps[0]
        assert not list(RunDir(run).checkpoint_dir.glob(".*.tmp-*"))
        remount(f"size={8 * kb}k")  # space is back
        assert main(["train", str(run), "--no-progress", "--no-eval", "--device", "cpu"]) == 0
        resumed = _latest(run)
    other = tmp_path / "other"
    assert _cli_train(other, "training.snapshot_every=0") == 0
    _assert_same_state(resumed, _latest(other))


def test_a_run_folder_that_becomes_read_only(tmp_path, monkeypatch, capsys, reference):
    """The checkpoints folder is remounted read-only (a bind mount over itself) just before the checkpoint of
    step 4, and writable again afterwards."""
    run = tmp_path / "run"
    folder = run / "checkpoints"
    real, calls, mounted = scorekit.training.loop.save_checkpoint, [], []

    def save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            for cmd in (["mount", "--bind", str(folder), str(folder)], ["mount", "-o", "remount,bind,ro", str(folder)]):
                if subprocess.run(cmd, capture_output=True).returncode:
                    mounted.append("failed")
                    break
                mounted.append("ok")
        return real(*args, **kwargs)

    monkeypatch.setattr(scorekit.training.loop, "save_checkpoint", save)
    try:
        code = _cli_train(run)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
    monkeypatch.undo()
    if mounted != ["ok", "ok"]:
        pytest.skip("cannot remount a folder read-only here; the injected EROFS test above covers the same path")
    assert code == 2
    _check_stopped_then_resume(run, capsys, reference, 4, 2, "Read-only file system", "step_000000004.safetensors")


# ----- a damaged newest checkpoint --------------------------------------------------------------------------

def test_a_truncated_newest_checkpoint_names_the_intact_older_one(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, TINY + ["training.steps=4", "training.checkpoint_every=2", "training.keep_checkpoints=2"])
    r = RunDir(run)
    newest = r.latest()
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    for argv in (["train", str(run), "--no-progress", "--device", "cpu"], ["sample", str(run), "--n", "2"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "truncated or corrupted" in err, err
        assert f"older checkpoint {r.checkpoint_path(2)} (step 2) is intact" in err and "mv " in err, err
    newest.rename(newest.with_name(newest.name + ".damaged"))
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s")]) == 0


# ----- file modes ---------------------------------------------------------------------------------------------

def test_checkpoints_and_exported_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        _train(run, TINY + ["training.steps=2"])
        export = tmp_path / "export"
        assert main(["export", "diffusers", str(run), "--out", str(export)]) == 0
        files = [RunDir(run).latest(), run / "config.yaml", *export.rglob("*.*")]
        assert len(files) >= 5
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
        os.umask(0o077)
        _train(run, TINY + ["training.steps=4"])
        assert stat.S_IMODE(RunDir(run).latest().stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_failed_write_keeps_the_file_that_was_there(tmp_path, monkeypatch):
    """A failed write leaves no partial file under the checkpoint's name, and the next write works."""
    path = tmp_path / "c.safetensors"
    scorekit.checkpoint.save_checkpoint(path, config={}, step=1, model={"w": torch.ones(3)})
    _fail_on_call(monkeypatch, scorekit.checkpoint, "save_file", call=1, err=errno.ENOSPC)
    with pytest.raises(WriteError, match="c.safetensors: could not be written .No space left on device"):
        scorekit.checkpoint.save_checkpoint(path, config={}, step=2, model={"w": torch.zeros(3)})
    assert load_checkpoint(path).step == 1 and torch.equal(load_checkpoint(path).model["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]
