"""Post-hoc EMA on a run (EDM2): a new run whose EMA is reconstructed from the run's power-function EMA
snapshots, and the FD sweep over sigma_rel that picks the EMA length after training, at no training cost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import CheckpointError
from ..images import atomic_write_bytes
from ..run import RunDir, load
from .power import list_snapshots, reconstruct

SWEEP_GRID = (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.10, 0.13, 0.16, 0.20, 0.25)


def snapshot_folder(run: str | Path) -> Path:
    folder = RunDir(run).checkpoint_dir / "phema"
    if not list_snapshots(folder):
        raise CheckpointError(f"{run}: no post-hoc EMA snapshots in {folder} (train with training.snapshot_every "
                              "> 0 to keep them)")
    return folder


def posthoc_run(run: str | Path, sigma_rel: float, out: str | Path, step: int | None = None) -> Path:
    """Write ``out``, a run whose EMA weights are the reconstructed EMA of width ``sigma_rel`` (its network
    weights are those of ``run``'s checkpoint at the reconstruction's step, or its latest)."""
    src, dst = RunDir(run), RunDir(out)
    folder = snapshot_folder(run)
    if dst.path.resolve() == src.path.resolve():
        raise CheckpointError(f"--out {out}: must differ from the run it reads")
    if dst.latest() is not None:
        raise CheckpointError(f"--out {out}: already holds a run with checkpoints; choose a new folder")
    ema, info = reconstruct(folder, sigma_rel, step)
    at = dict(src.checkpoints()).get(info["step"]) or src.latest()
    if at is None:
        raise CheckpointError(f"{run}: no checkpoint to take the configuration from")
    ck = load_checkpoint(at, optimizer=False)
    dst.path.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "classes.json", "schedules.json"):
        if (src.path / name).is_file():
            shutil.copyfile(src.path / name, dst.path / name)
    save_checkpoint(dst.checkpoint_path(info["step"]), config=ck.config, step=info["step"], model=ck.model, ema=ema,
                    state={"posthoc_ema": {k: v for k, v in info.items() if k != "coefficients"},
                           "source_run": str(src.path)})
    atomic_write_bytes(dst.path / "posthoc_ema.json", (json.dumps(info, indent=2) + "\n").encode())
    return dst.path


def sweep(run: str | Path, *, grid=SWEEP_GRID, n: int = 2000, seeds: int = 1, meter=None, step: int | None = None,
          device: str = "cpu", batch_size: int = 500, say=print) -> list[dict]:
    """FD (``meter``, default the run's FrechetMeter) of the reconstructed EMA at each sigma_rel of ``grid``,
    mean and spread over ``seeds`` sample seeds, with the run's own sampler; nothing is trained."""
    from ..evaluation.generate import generate
    from ..evaluation.quality import FrechetMeter

    folder = snapshot_folder(run)
    denoiser = load(run, device=device)
    meter = meter or FrechetMeter(denoiser.config, device=device)
    rows = []
    for r in grid:
        state, info = reconstruct(folder, r, step)
        denoiser.net.load_state_dict(state)
        fds = [meter(generate(denoiser, n, seed=s, batch_size=batch_size)) for s in range(seeds)]
        rows.append({"sigma_rel": r, "fd": float(np.mean(fds)), "fd_std": float(np.std(fds, ddof=1)) if seeds > 1
                     else None, "fds": fds, "step": info["step"], "n": n})
        say(f"sigma_rel {r:.3f}: {meter.name} {np.mean(fds):.2f}" + (f" ± {np.std(fds, ddof=1):.2f}"
                                                                       if seeds > 1 else ""))
    return rows


def plot_sweep(path: Path, rows: list[dict], *, metric: str = "FD", reference: dict[str, float] | None = None) -> None:
    """FD against sigma_rel (log axis), the best marked, ``reference`` values (e.g. the classic EMA) as lines."""
    from ..evaluation.plots import figure

    with figure(path, size=(7, 4)) as ax:
        x = [r["sigma_rel"] for r in rows]
        y = [r["fd"] for r in rows]
        err = [r["fd_std"] or 0.0 for r in rows]
        ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, label="post-hoc EMA")
        best = min(rows, key=lambda r: r["fd"])
        ax.plot([best["sigma_rel"]], [best["fd"]], "r*", markersize=15, label=f"best: sigma_rel {best['sigma_rel']:g}")
        for i, (name, value) in enumerate((reference or {}).items()):
            ax.axhline(value, color=f"C{i + 2}", ls="--", label=name)
        ax.set_xscale("log")
        ax.set(xlabel="sigma_rel (EMA length relative to training time)", ylabel=metric,
               title=f"{metric} against the EMA length, reconstructed after training ({rows[0]['n']} samples)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
