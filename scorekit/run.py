"""Run directories (config.yaml, checkpoints/, samples/, metrics.jsonl, summary.json) and ``scorekit.load``."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .config import Config, ConfigError, from_dict, load_config
from .errors import CheckpointError
from .images import atomic_write_bytes
from .model.denoiser import Denoiser
from .model.factory import build_denoiser
from .processes.vdm import refresh_schedule

SCHEDULES_FILE = "schedules.json"  # the schedules scorekit tune-schedule searched for this run
_CKPT = re.compile(r"^step_(\d+)\.safetensors$")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.checkpoint_dir = self.path / "checkpoints"
        self.samples_dir = self.path / "samples"
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.tensorboard_dir = self.path / "tensorboard"

    def checkpoints(self) -> list[tuple[int, Path]]:
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoint_dir.iterdir() if (m := _CKPT.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step_{step:09d}.safetensors"

    @property
    def guide_path(self) -> Path:
        """The weaker guide the run keeps for autoguidance (training.guide_at; ``--guide self``)."""
        return self.checkpoint_dir / "guide.safetensors"

    @property
    def guide_choice_path(self) -> Path:
        """The autoguidance weight (and interval) measured best for the kept guide (``scorekit study autoguidance``
        writes it; ``--guide self`` without ``--guidance`` reads it)."""
        return self.checkpoint_dir / "guide.json"

    def prune(self, keep: int) -> None:
        for _, path in self.checkpoints()[:-keep]:
            path.unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> None:
        """Delete half-written checkpoint files left by a process killed while saving."""
        if self.checkpoint_dir.is_dir():
            for p in self.checkpoint_dir.glob(".step_*.tmp-*"):
                p.unlink(missing_ok=True)

    def write_config(self, cfg: Config) -> None:
        atomic_write_bytes(self.config_path, cfg.to_yaml().encode())

    def read_config(self, overrides: list[str] | None = None) -> Config:
        return load_config(self.config_path, overrides)

    def write_summary(self, summary: dict) -> None:
        atomic_write_bytes(self.summary_path, (json.dumps(summary, indent=2) + "\n").encode())

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after ``step`` (written after the checkpoint a resume starts from)."""
        if not self.metrics_path.is_file():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        atomic_write_bytes(self.metrics_path, ("\n".join(keep) + "\n" if keep else "").encode())


def read_checkpoint(path: Path, **options) -> Checkpoint:
    """:func:`~scorekit.checkpoint.load_checkpoint`, and when the file is damaged (a truncated write, a bad disk)
    the error says which older checkpoint of the same run is intact and how to go on from it."""
    try:
        return load_checkpoint(path, **options)
    except CheckpointError as e:
        run = RunDir(path.parent.parent)
        m = _CKPT.match(path.name)
        older = [(s, p) for s, p in run.checkpoints() if m and s < int(m.group(1))]
        for step, candidate in reversed(older):
            try:
                load_checkpoint(candidate)
            except CheckpointError:
                continue
            raise CheckpointError(
                f"{e}; the older checkpoint {candidate} (step {step}) is intact: move the damaged file aside "
                f"(mv {path} {path}.damaged) and the run continues from step {step} (`scorekit train {run.path}`), "
                f"or give {candidate} to commands that take a checkpoint") from None
        if older:
            raise CheckpointError(f"{e}; the older checkpoints of {run.path} are damaged too") from None
        raise


def resolve_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        latest = RunDir(path).latest()
        if latest is None:
            raise CheckpointError(f"{path}: no checkpoint in {path / 'checkpoints'} (has the run trained yet?)")
        return latest
    if not path.exists():
        raise CheckpointError(f"{path}: no such run directory or checkpoint")
    return path


def config_of(run_or_checkpoint: str | Path) -> Config:
    """The configuration a run's latest checkpoint (or a checkpoint file) was trained with; reads no weights."""
    path = resolve_checkpoint(run_or_checkpoint)
    try:
        return from_dict(read_checkpoint(path, weights=False).config)
    except ConfigError as e:
        raise CheckpointError(f"{path}: the stored configuration is invalid ({e})") from None


def load(run_or_checkpoint: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> Denoiser:
    """The denoiser of a run (its latest checkpoint) or of one checkpoint file, in eval mode.

    ``ema`` selects the exponential-moving-average weights (what the papers sample and evaluate with)
    when the checkpoint has them. The returned denoiser carries ``config`` and ``checkpoint_step``.
    """
    path = resolve_checkpoint(run_or_checkpoint)
    ck = read_checkpoint(path, optimizer=False)
    try:
        cfg = from_dict(ck.config)
    except ConfigError as e:
        raise CheckpointError(f"{path}: the stored configuration is invalid ({e})") from None
    denoiser = build_denoiser(cfg)
    state = ck.ema if ema and ck.ema else ck.model
    try:
        denoiser.net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the configured network ({str(e).splitlines()[0]})") from None
    refresh_schedule(denoiser)  # a learned schedule (VDM) comes with the weights
    denoiser.checkpoint_step = ck.step
    denoiser.uses_ema = bool(ema and ck.ema)
    run_dir = path.parent.parent  # RUN/checkpoints/step_*.safetensors
    if (run_dir / "config.yaml").is_file():
        denoiser.schedules = load_schedules(run_dir)  # searched time-step schedules (schedule="auto")
    return denoiser.to(device).eval()


def resolve_run(source: str | Path, out: str | Path | None, overrides: list[str] | None) -> tuple[RunDir, Config]:
    """The run directory and configuration of ``scorekit train SOURCE [--out OUT] [overrides]``.

    SOURCE is a preset, a YAML file, or a run directory (resumed with its saved config.yaml; overrides
    apply, e.g. training.steps=... to train longer). A preset or YAML with an --out that already has a
    checkpoint resumes that run too (the same command again continues it; its config.yaml wins)."""
    src = Path(source)
    if src.is_dir():
        run = RunDir(src)
        if not run.config_path.is_file():
            raise ConfigError(f"{src}: a folder without config.yaml is not a run (give a preset, a YAML config or "
                              "a run directory)")
        if out is not None and Path(out).resolve() != src.resolve():
            raise ConfigError(f"--out {out}: `train {src}` continues the run in {src}; drop --out")
        return run, run.read_config(overrides)
    if out is not None and RunDir(out).latest() is not None:
        run = RunDir(out)
        return run, run.read_config(overrides)
    cfg = load_config(source, overrides)
    run = RunDir(out or Path("runs") / cfg.name)
    if run.path.exists() and not run.path.is_dir():
        raise ConfigError(f"--out {run.path}: exists and is not a folder")
    return run, cfg


def save_schedule(run: str | Path, sampler: str, steps: int, result: dict, criterion: str) -> Path:
    """Add (or replace) this sampler and budget's schedule in RUN/schedules.json (atomically)."""
    path = Path(run) / SCHEDULES_FILE
    table = json.loads(path.read_text()) if path.is_file() else {}
    table[f"{sampler}:{steps}"] = {**result, "criterion": criterion, "date": datetime.date.today().isoformat()}
    atomic_write_bytes(path, (json.dumps(table, indent=2) + "\n").encode())
    return path


def load_schedules(run_dir: str | Path) -> dict:
    """RUN/schedules.json as a dict (empty when the run has none)."""
    path = Path(run_dir) / SCHEDULES_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: not valid JSON (delete it to sample with the default schedules)") from None
