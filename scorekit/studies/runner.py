"""What every study shares: a folder of ordinary run directories (one per arm), training them with resume,
measuring checkpoints with results written into each run's own ``eval/`` folder (so a re-run reuses them
and the report can be checked against them), and writing the report (Markdown, CSV, JSON, figures).

A study composes what train / evaluate / quality already do; it adds no training logic of its own.
Re-running a study resumes it: finished runs are skipped, interrupted ones continue bit for bit, and
measurements already made are read back.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import Config, load_config
from ..errors import ScorekitError, TrainingError
from ..evaluation.quality import FrechetMeter
from ..images import atomic_write_bytes
from ..rng import ImageRNG
from ..run import RunDir


@dataclass
class Arm:
    """One run of a study: a folder name, its label in tables, and overrides over the study's base config (or
    over its own ``base`` preset, for a study that compares presets)."""

    name: str
    label: str
    overrides: list[str] = field(default_factory=list)
    base: str | None = None


@dataclass
class Context:
    """The study's inputs: where, which base config, how many steps, how many samples per measurement."""

    folder: Path
    base: str
    overrides: list[str]
    steps: int
    n: int = 500
    checkpoints: int = 5
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    extractor: str = "auto"
    inception_weights: str | None = None

    def config(self, arm: Arm) -> Config:
        return load_config(arm.base or self.base, self.arm_overrides(arm))

    def arm_overrides(self, arm: Arm) -> list[str]:
        every = max(1, self.steps // self.checkpoints)
        return [*self.overrides, f"training.steps={self.steps}", f"training.checkpoint_every={every}",
                f"training.keep_checkpoints={self.checkpoints + 1}", *arm.overrides]

    def meter(self, cfg: Config) -> FrechetMeter:
        """FD against the data's reference split with the study's extractor (see quality.FrechetMeter)."""
        return FrechetMeter(cfg, extractor=self.extractor, weights=self.inception_weights, device=self.device)

    def run_dir(self, arm: Arm) -> Path:
        return self.folder / "runs" / arm.name

    def say(self, text: str) -> None:
        print(text, flush=True)


def train_arms(ctx: Context, arms: list[Arm]) -> dict[str, str | None]:
    """Train every arm into its run directory (skipping finished ones, resuming interrupted ones).
    Returns, per arm, None when it trained or why it stopped (e.g. non-finite losses: the paper's
    "unstable")."""
    from ..training import train_run

    for arm in arms:  # every arm's configuration is checked before the first one trains
        ctx.config(arm)
    status: dict[str, str | None] = {}
    for i, arm in enumerate(arms):
        run = RunDir(ctx.run_dir(arm))
        failed = run.path / "FAILED"
        latest = run.checkpoints()[-1][0] if run.checkpoints() else 0
        steps = ctx.config(arm).training.steps  # an arm may train for fewer steps than the study's
        if failed.is_file():
            status[arm.name] = failed.read_text().strip()
            ctx.say(f"[{i + 1}/{len(arms)}] {arm.label}: stopped before ({status[arm.name]})")
            continue
        if latest >= steps:
            ctx.say(f"[{i + 1}/{len(arms)}] {arm.label}: trained ({latest} steps), skipped")
            status[arm.name] = None
            continue
        ctx.say(f"[{i + 1}/{len(arms)}] {arm.label}: training {steps} steps" +
                (f" (resuming at {latest})" if latest else ""))
        try:
            result = train_run(arm.base or ctx.base, run.path, ctx.arm_overrides(arm), device=ctx.device,
                               progress=ctx.progress, evaluate=False)
            if result.interrupted:  # SIGINT / SIGTERM: the run checkpointed; the same command resumes the study
                raise KeyboardInterrupt
            status[arm.name] = None
        except TrainingError as e:
            status[arm.name] = str(e).split(";")[0]
            atomic_write_bytes(failed, (status[arm.name] + "\n").encode())
            ctx.say(f"    {arm.label}: {status[arm.name]}")
    return status


def judged(meter: FrechetMeter, images: torch.Tensor) -> dict:
    """Every judge's FD of ``images``: ``fd`` the first judge's (the meter's), ``fds`` all of them by name."""
    fds = meter.all(images)
    return {"fd": fds[meter.name], "fds": fds}


def judges_tag(meter: FrechetMeter) -> str:
    """The suffix of measurement keys made with more than one judge (so older single-judge results are not read
    back as if they had both)."""
    return "" if len(meter.names) == 1 else "_" + "-".join(name.split()[0].lower() for name in meter.names)


def other_judges(meter: FrechetMeter) -> list[str]:
    """The judges beside the meter's own, whose FD the reports show in a column of their own."""
    return meter.names[1:]


def measured(run: Path, key: str, compute: Callable[[], dict]) -> dict:
    """``compute()`` once per run and key: the result is kept in ``run/eval/<key>.json`` and read back."""
    path = run / "eval" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
    return result


@torch.no_grad()
def sample_images(denoiser, n: int, *, seed: int, options: dict | None = None, sampler: str | None = None,
                  batch_size: int = 256, final_level: bool = False) -> dict[str, torch.Tensor]:
    """uint8 samples with the run's sampler (image i from (seed, i)), on the run's value set if it learnt one
    (:func:`scorekit.evaluation.generate.samples_u8`); with ``final_level`` (Langevin) also
    the samples before the final denoising step, from the same chains (the rebuttal's comparison)."""
    from ..evaluation.generate import samples_u8
    from ..samplers import sample, sampling_options

    cfg = denoiser.config
    name = sampler or cfg.sampling.sampler
    opts = {**sampling_options(cfg.sampling), **(options or {})}
    out: dict[str, list] = {"samples": [], "before_denoising": []}
    last: dict = {}

    def keep(info: dict) -> None:
        if not info.get("denoised"):
            last["x"] = info["x"]

    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        x = sample(denoiser, name, (len(idx), *denoiser.image_shape), ImageRNG(seed, idx, denoiser.device),
                   callback=keep if final_level else None, **opts)
        out["samples"].append(samples_u8(x, denoiser))
        if final_level:
            out["before_denoising"].append(samples_u8(last["x"], denoiser))
    return {k: torch.cat(v) for k, v in out.items() if v}


def seeded_fd(ctx: Context, name: str, denoiser, meter, run, sampler: str, options: dict, seeds: int,
              grid=None) -> dict:
    """Every judge's FD of ``seeds`` sample seeds (kept in the run's eval/ folder under the study's ``name``), each
    judge's mean with its 95% interval and the values; ``grid``: where to draw the first 100 samples of the first
    seed."""
    from ..images import save_grid
    from ..metrics.intervals import mean_interval

    def compute(seed: int) -> dict:
        denoiser.nfe = 0
        out = sample_images(denoiser, ctx.n, seed=seed, sampler=sampler, options=options, batch_size=500)
        if grid is not None and seed == ctx.seed:
            save_grid(grid, out["samples"][:100])
        return {**judged(meter, out["samples"]), "nfe": denoiser.nfe / -(-ctx.n // 500), "n": ctx.n, "seed": seed}

    opts = "_".join(f"{k}{v}" for k, v in sorted(options.items()))
    rows = [measured(run, f"{name}_{sampler}_{opts}_n{ctx.n}_seed{s}{judges_tag(meter)}", lambda s=s: compute(s))
            for s in range(ctx.seed, ctx.seed + seeds)]
    out = {"seeds": len(rows), "nfe": rows[0]["nfe"], "judges": {}}
    for judge in meter.names:
        values = [r["fds"][judge] for r in rows]
        mean, lo, hi = mean_interval(values)
        out["judges"][judge] = {"fd": mean, "low": lo, "high": hi, "values": values,
                               "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    out["fd"] = out["judges"][meter.name]["fd"]
    return out


def training_cost(run, cfg) -> dict:
    """Training wall time from the run's logged throughput, and the images it saw."""
    total, last = 0.0, 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("images_per_s", 0) > 0:
            total += (row["step"] - last) * cfg.training.batch_size / row["images_per_s"]
            last = row["step"]
    return {"train_s": total, "images": cfg.training.steps * cfg.training.batch_size}


def fd_text(j: dict) -> str:
    """A judge's FD with its interval, or its one seed."""
    from ..metrics.intervals import fmt_interval

    return fmt_interval(j["fd"], j["low"], j["high"]) if j["low"] is not None else f"{j['fd']:.2f} (1 seed)"


def with_ratios(r: dict, ref: dict) -> dict:
    """``r`` (a :func:`seeded_fd` result) with each judge's FD ratio to ``ref``'s: ratio, ratio_low, ratio_high (the
    95% interval of a ratio of means over the seeds)."""
    from ..metrics.intervals import ratio_interval

    for name, j in r["judges"].items():
        q, lo, hi = ratio_interval(j["values"], ref["judges"][name]["values"])
        j.update(ratio=q, ratio_low=lo, ratio_high=hi)
    return r


def ratio_text(j: dict) -> str:
    """A judge's ratio with its interval (set by :func:`with_ratios`)."""
    from ..metrics.intervals import fmt_interval

    return fmt_interval(j["ratio"], j["ratio_low"], j["ratio_high"])


def judges_text(r: dict) -> str:
    """Every judge's FD with its interval, and its ratio where :func:`with_ratios` set one."""
    return ", ".join(f"{n} {fd_text(j)}" + (f" ({ratio_text(j)}x)" if "ratio" in j else "")
                     for n, j in r["judges"].items())


def verdict_text(name: str, j: dict, target: float) -> str:
    """``proxy FD 1.14 [1.05, 1.24] (within noise)``: a judge's ratio against a target "at most ``target``"."""
    from ..metrics.intervals import verdict

    return f"{name} {ratio_text(j)} ({verdict(j['ratio_low'], j['ratio_high'], target)})"


# ----- the report ---------------------------------------------------------------------------------------

def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine(device: str = "cpu") -> str:
    """``AMD EPYC 7B13, 2 cores`` (the CPU model from /proc/cpuinfo where there is one), or the GPU's name."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = torch.get_num_threads()
    return f"{name}, {n} thread{'' if n == 1 else 's'}"


def write_report(ctx: Context, name: str, title: str, body: str, payload: dict, command: str) -> Path:
    """report.md (title, command, the study's body) and <name>.json (the protocol and every number)."""
    protocol = {"study": name, "base": ctx.base, "overrides": ctx.overrides, "steps": ctx.steps,
                "samples_per_measurement": ctx.n, "checkpoints": ctx.checkpoints, "seed": ctx.seed,
                "device": ctx.device, "command": command, "torch": torch.__version__,
                "machine": machine(ctx.device),
                "date": datetime.date.today().isoformat()}
    atomic_write_bytes(ctx.folder / f"{name}.json",
                       (json.dumps({"protocol": protocol, **payload}, indent=2) + "\n").encode())
    text = f"# {title}\n\n`{command}` ({protocol['date']}, {protocol['machine']}, torch {torch.__version__})\n\n{body}"
    atomic_write_bytes(ctx.folder / "report.md", text.encode())
    return ctx.folder / "report.md"


def checkpoint_steps(ctx: Context, arm: Arm) -> list[tuple[int, Path]]:
    """The scheduled checkpoints of an arm (every steps // checkpoints, and the last): a checkpoint written
    when a run was interrupted is not measured, so a resumed study reports what an uninterrupted one does."""
    every = max(1, ctx.steps // ctx.checkpoints)
    steps = [(s, p) for s, p in RunDir(ctx.run_dir(arm)).checkpoints() if s % every == 0 or s == ctx.steps]
    if not steps:
        raise ScorekitError(f"{ctx.run_dir(arm)}: no checkpoints to measure")
    return steps


def loss_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """The run's logged losses from metrics.jsonl: the training loss and the fixed held-in / held-out ones."""
    curves: dict[str, list] = {"loss": [], "train_loss_fixed": [], "test_loss": []}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for k in curves:
            if k in row:
                curves[k].append((row["step"], row[k]))
    return curves
