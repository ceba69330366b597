"""The README's Python examples run as they are written, on tiny runs at runs/digits and
runs/digits-classifier (so they cannot drift)."""

import re
import shutil
from pathlib import Path

import pytest

from scorekit.cli import main
from scorekit.training import train_run

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    train_run("ddpm-digits", root / "runs" / "digits", ["model.ch=16", "model.ch_mult=[1,2]",
                                                       "model.attn_resolutions=[4]", "training.batch_size=16",
                                                       "training.steps=2", "process.num_timesteps=20",
                                                       "sampling.steps=0"], device="cpu", progress=False,
              evaluate=False)
    assert main(["classifier", str(root / "runs" / "digits"), "--out", str(root / "runs" / "digits-classifier"),
                 "--steps", "2", "--no-progress"]) == 0
    return root / "runs"


def test_the_readme_has_python_examples():
    assert BLOCKS and any("scorekit.load(" in b for b in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index, runs, tmp_path, monkeypatch):
    shutil.copytree(runs, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
