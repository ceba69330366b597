import os
import pickle

import pytest
import torch

from scorekit.checkpoint import load_checkpoint, safe_torch_load, save_checkpoint
from scorekit.errors import CheckpointError, WriteError
from scorekit.run import load


def _state():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return net, opt


def test_round_trip_of_weights_optimizer_and_state(tmp_path):
    net, opt = _state()
    ema = {k: v + 1 for k, v in net.state_dict().items()}
    p = save_checkpoint(tmp_path / "c.safetensors", config={"name": "x"}, step=12, model=net.state_dict(), ema=ema,
                        optimizer=opt.state_dict(), state={"samples_seen": 96})
    ck = load_checkpoint(p)
    assert ck.step == 12 and ck.config == {"name": "x"} and ck.state["samples_seen"] == 96
    assert all(torch.equal(ck.model[k], v) for k, v in net.state_dict().items())
    assert all(torch.equal(ck.ema[k], v) for k, v in ema.items())
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    opt2.load_state_dict(ck.optimizer)
    assert opt2.param_groups[0]["lr"] == 1e-3
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]) and torch.equal(a["step"], b["step"])


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    net, _ = _state()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, config={}, step=1, model=net.state_dict())
    import scorekit.checkpoint as ckmod

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckmod, "save_file", crash)
    with pytest.raises(WriteError, match="c.safetensors: could not be written .disk full"):
        save_checkpoint(path, config={}, step=2, model={k: v * 0 for k, v in net.state_dict().items()})
    assert load_checkpoint(path).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary file left


def test_non_finite_weights_are_never_written(tmp_path):
    sd = {"w": torch.tensor([1.0, float("nan")])}
    with pytest.raises(CheckpointError, match="non-finite weights"):
        save_checkpoint(tmp_path / "c.safetensors", config={}, step=1, model=sd)
    assert not (tmp_path / "c.safetensors").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch, legacy):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    if legacy:
        path.write_bytes(pickle.dumps({"model": _Evil()}))
    else:
        torch.save({"model": _Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused|corrupted"):
        safe_torch_load(path)
    with pytest.raises(CheckpointError):
        load(path)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_and_foreign_files_give_clear_errors(tmp_path):
    net, _ = _state()
    good = save_checkpoint(tmp_path / "c.safetensors", config={}, step=1, model=net.state_dict())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load(tmp_path / "runless") if (tmp_path / "runless").mkdir() is None else None


def test_safe_torch_load_reads_plain_state_dicts(tmp_path):
    torch.save({"module.w": torch.ones(2), "step": 3}, tmp_path / "ok.pt")
    assert safe_torch_load(tmp_path / "ok.pt")["step"] == 3


def test_a_truncated_checkpoint_whose_header_length_starts_with_0x80_is_not_called_pickled(tmp_path):
    """A safetensors header of 128 + 256 k bytes starts with the byte 0x80, as a legacy pickle does; the '{' after
    the 8-byte length tells them apart (a real torch.save pickle is still recognised)."""
    path = tmp_path / "step_000000001.safetensors"
    path.write_bytes((384).to_bytes(8, "little") + b'{"__metadata__": {"scorekit": "')  # cut inside the header
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(path)
    torch.save({"a": torch.zeros(1)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(tmp_path / "legacy.pt")
