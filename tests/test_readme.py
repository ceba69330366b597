"""The README's Python examples run as they are written, on a tiny run at runs/digits (so they cannot drift)."""

import re
from pathlib import Path

import pytest

from scorekit.train import train_run

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_readme_has_python_examples():
    assert BLOCKS and any("scorekit.load(" in b for b in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_run("ddpm-digits", "runs/digits", ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]",
                                             "training.batch_size=16", "training.steps=2", "process.num_timesteps=20",
                                             "sampling.steps=0"], device="cpu", progress=False, evaluate=False)
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
