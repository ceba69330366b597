"""Reliability of the training engine: exact resume, signals, kills, non-finite steps, DDP."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from scorekit.checkpoint import load_checkpoint
from scorekit.errors import TrainingError
from scorekit.run import RunDir
from scorekit.training import train_run

TINY = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=16",
        "training.log_every=1", "training.checkpoint_every=100", "training.warmup=2", "training.ema_decay=0.9",
        "sampling.num_samples=4", "eval.bpd_images=0", "eval.proxy_samples=0"]


def _train(run, overrides):
    return train_run("ddpm-digits", run, overrides, device="cpu", progress=False, evaluate=False)


def _latest(run):
    return load_checkpoint(RunDir(run).latest())


def _assert_same_state(a, b, exact=True):
    parts = [("model", a.model, b.model), ("ema", a.ema, b.ema)] + [(g, a.extra[g], b.extra[g]) for g in a.extra]
    assert set(a.extra) == set(b.extra)
    for part, sa, sb in parts:
        for k, v in sa.items():
            other = sb[k]
            assert torch.equal(v, other) if exact else torch.allclose(v, other, atol=2e-5), f"{part}.{k}"
    if exact:
        for pid, st in a.optimizer["state"].items():
            for k, v in st.items():
                assert torch.equal(v, b.optimizer["state"][pid][k]), f"optim.{pid}.{k}"


EDM_RECIPE = ["model.precond=edm", "training.loss=edm", "model.output=x0", "data.augment=0.3",
              "training.snapshot_every=2"]


# improved DDPM's L_vlb with importance-sampled t on 4 levels (the sampler's history is full after ~3 steps, so
# the resumed run must restore it) and the likelihood-weighted loss at continuous levels
VLB_IS = ["model.variance=learned_range", "training.loss=vlb", "training.t_sampling=importance",
          "process.num_timesteps=4", "process.beta_end=0.5"]
LIKELIHOOD = ["training.loss=likelihood", "training.t_sampling=importance"]
FLOW = ["family=flow", "process.kind=flow", "model.output=velocity", "training.loss=fm",
        "training.t_sampling=logit_normal", "training.p_mean=0", "training.p_std=1"]
MEANFLOW = [*FLOW[:3], "model.mean_flow=true", "training.loss=meanflow", "training.t_sampling=logit_normal",
            "training.meanflow_ratio=0.5", "sampling.sampler=meanflow", "sampling.steps=1"]


@pytest.mark.parametrize("recipe", [[], EDM_RECIPE, VLB_IS, LIKELIHOOD, FLOW, MEANFLOW],
                         ids=["ddpm", "edm+augment+phema", "vlb+importance", "likelihood", "flow", "meanflow"])
def test_resume_is_bit_identical(tmp_path, recipe):
    """2N steps in one go == N steps, a restart, N more (dropout on, so the RNG handling matters); with EDM's
    recipe the augmentations, noise levels, power-function EMAs and their snapshots continue exactly too."""
    _train(tmp_path / "a", TINY + recipe + ["model.dropout=0.1", "training.steps=6"])
    _train(tmp_path / "b", TINY + recipe + ["model.dropout=0.1", "training.steps=3"])
    _train(tmp_path / "b", ["training.steps=6"])
    a, b = _latest(tmp_path / "a"), _latest(tmp_path / "b")
    assert a.step == b.step == 6 and a.state["samples_seen"] == 96
    _assert_same_state(a, b)
    if recipe == VLB_IS:
        assert set(a.extra) == {"tsampler"} and int(a.extra["tsampler"]["count"].min()) >= 10  # warm when saved
    if recipe == EDM_RECIPE:
        assert set(a.extra) == {"phema0", "phema1"}
        snaps = sorted((tmp_path / "a" / "checkpoints" / "phema").iterdir())
        assert [p.name for p in snaps] == [p.name for p in sorted((tmp_path / "b" / "checkpoints" / "phema").iterdir())]
        from safetensors.torch import load_file

        for p in snaps:
            sa, sb = load_file(p), load_file(tmp_path / "b" / "checkpoints" / "phema" / p.name)
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]  # no line lost or repeated


def test_train_on_a_run_directory_resumes_it_with_its_saved_config(tmp_path, capsys):
    """`scorekit train RUN training.steps=6` after 3 steps == 6 steps in one go, bit for bit."""
    from scorekit.cli import main

    _train(tmp_path / "a", TINY + ["model.dropout=0.1", "training.steps=6"])
    _train(tmp_path / "b", TINY + ["model.dropout=0.1", "training.steps=3"])
    assert main(["train", str(tmp_path / "b"), "training.steps=6", "--no-eval", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    _assert_same_state(_latest(tmp_path / "a"), _latest(tmp_path / "b"))
    assert RunDir(tmp_path / "b").read_config().training.steps == 6 and _latest(tmp_path / "b").step == 6
    # --out naming another folder, and a folder that is not a run, are refused before anything is written
    assert main(["train", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2
    assert "continues the run in" in capsys.readouterr().err and not (tmp_path / "c").exists()
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty")]) == 2
    assert "without config.yaml is not a run" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_fresh_start_drops_metric_lines_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)))
    _train(tmp_path, TINY + ["training.steps=2"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]  # (the held-out losses of the last step have their own line)
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] != 9.0 for r in rows)


def test_keeps_only_the_last_k_checkpoints(tmp_path):
    _train(tmp_path, TINY + ["training.steps=7", "training.checkpoint_every=2", "training.keep_checkpoints=2"])
    assert [s for s, _ in RunDir(tmp_path).checkpoints()] == [6, 7]


def test_non_finite_steps_are_skipped_then_training_stops(tmp_path, monkeypatch):
    import scorekit.training.loop as tr

    real = tr.objective
    calls = {"n": 0}

    def flaky(cfg, denoiser, x0, t, noise, y=None, **kw):
        calls["n"] += 1
        loss = real(cfg, denoiser, x0, t, noise, y, **kw)
        return loss * float("nan") if calls["n"] in (2, 3) else loss

    monkeypatch.setattr(tr, "objective", flaky)
    _train(tmp_path / "ok", TINY + ["training.steps=5"])
    ck = _latest(tmp_path / "ok")
    assert ck.step == 5 and all(bool(torch.isfinite(v).all()) for v in ck.model.values())
    events = [json.loads(line) for line in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
    assert [e["nonfinite"] for e in events if e.get("event") == "nonfinite_skipped"] == [1, 2]
    # the skipped steps did not move the weights: Adam took exactly 3 steps
    assert int(ck.optimizer["state"][0]["step"]) == 3

    monkeypatch.setattr(tr, "objective", lambda *a, **kw: real(*a, **kw) * float("nan"))
    with pytest.raises(TrainingError, match="3 non-finite losses or gradients in a row"):
        _train(tmp_path / "bad", TINY + ["training.steps=50", "training.max_nonfinite=3"])
    assert RunDir(tmp_path / "bad").latest() is None  # nothing written, certainly nothing non-finite


def _wait_for_step(run, step, proc, timeout=120):
    deadline = time.time() + timeout
    path = run / "metrics.jsonl"
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        if path.is_file():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]
            if lines and lines[-1]["step"] >= step:
                return lines[-1]["step"]
        time.sleep(0.2)
    raise TimeoutError(f"no step {step} in {timeout} s")


def _start(run, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "scorekit", "train", "ddpm-digits", "--out", str(run),
                             "--no-progress", "--no-eval", *TINY, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def test_sigterm_checkpoints_and_exits_0_and_sigkill_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, "training.steps=100000", "training.checkpoint_every=4")
    _wait_for_step(run, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "interrupted: checkpoint written at step" in out
    stopped = _latest(run).step
    assert stopped >= 2

    proc = _start(run, "training.checkpoint_every=4")  # resumes
    _wait_for_step(run, stopped + 9, proc)  # at least two checkpoints (every 4 steps) written since
    proc.kill()
    proc.communicate()
    ck = _latest(run)  # the newest complete checkpoint loads
    assert ck.step > stopped and ck.step % 4 == 0
    result = _train(run, [f"training.steps={ck.step + 2}"])
    assert result.step == ck.step + 2


def test_two_process_ddp_matches_one_process(tmp_path):
    """Same global batch over 2 gloo processes: the weights after K steps equal a single process's."""
    common = TINY + ["model.dropout=0.0", "training.steps=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "scorekit",
           "train", "ddpm-digits", "--out", str(tmp_path / "ddp"), "--no-progress", "--no-eval", *common]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    _train(tmp_path / "single", common)
    _assert_same_state(_latest(tmp_path / "ddp"), _latest(tmp_path / "single"), exact=False)


def test_a_two_node_rendezvous_on_localhost_matches_one_process(tmp_path):
    """Two torchrun launchers, one process each, meet through the c10d rendezvous as two nodes would (the
    README's multi-node command, here on one machine with gloo); the weights equal a single process's."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = TINY + ["model.dropout=0.0", "training.steps=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_id", "t2n",
         "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "scorekit", "train", "ddpm-digits",
         "--out", str(tmp_path / "two-nodes"), "--no-progress", "--no-eval", *common],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = []
    for proc in launchers:
        try:
            outputs.append(proc.communicate(timeout=300)[0])
        finally:
            proc.kill()
    assert all(p.returncode == 0 for p in launchers), "\n".join(outputs)
    _train(tmp_path / "single", common)
    _assert_same_state(_latest(tmp_path / "two-nodes"), _latest(tmp_path / "single"), exact=False)
