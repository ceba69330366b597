"""The training loop: Adam with warmup, clipping, EMA, bf16/compile on CUDA, accumulation, DDP, resume.

Every random draw of step k — which examples, their noise levels, noise, flips and dropout — is seeded
by (seed, k), so a resumed run continues exactly where it stopped and data-parallel runs see the same
global batch as a single process. A checkpoint holds the weights, EMA, optimizer and step.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import save_checkpoint
from ..config import BOUND_LOSSES, FEWSTEP_LOSSES, Config
from ..data import BatchStream, build_source, detect_values, micro_batch_slice, preprocess
from ..data.augment import apply as augment_apply
from ..dist import Dist
from ..ema import EMA
from ..ema.power import PowerEMA, save_snapshot
from ..errors import CheckpointError, DataError, TrainingError, WriteError
from ..evaluation.likelihood import pixel_max
from ..images import atomic_write_bytes
from ..model.denoiser import Denoiser
from ..model.factory import build_denoiser
from ..processes.vdm import refresh_schedule
from ..progress import progress
from ..rng import image_seed
from ..run import RunDir, read_checkpoint, resolve_run
from .distill import save_student_schedules
from .draws import FixedBatches, step_draws
from .fewstep import FewStep
from .guide import guide_step, keep_guide
from .logger import MetricsLogger, StopFlag
from .objective import learning_rate, objective
from .tsampling import LossSecondMomentSampler


@dataclass
class TrainResult:
    run: Path
    step: int
    interrupted: bool = False
    summary: dict = field(default_factory=dict)
    train_seconds: float = 0.0  # the training steps of this invocation (not the sampling and metrics after)


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, dist: Dist, *, progress: bool = True):
        self.cfg, self.run, self.dist, self.progress = cfg, RunDir(run_dir), dist, progress
        self.device = dist.device
        tc = cfg.training
        if tc.batch_size % (dist.world * tc.grad_accum):
            raise TrainingError(f"training.batch_size {tc.batch_size} must be divisible by {dist.world} processes "
                                f"x training.grad_accum {tc.grad_accum}")
        cuda = self.device.type == "cuda"
        self.bf16 = tc.precision == "bf16" or (tc.precision == "auto" and cuda)
        torch.manual_seed(tc.seed)  # the initial weights depend on the seed only
        self.denoiser = build_denoiser(cfg).to(self.device)
        if tc.channels_last:
            self.denoiser.net.to(memory_format=torch.channels_last)
        self.net = self.denoiser.net
        self.params = list(self.net.parameters())
        self.ema = EMA(self.net, tc.ema_decay) if tc.ema_decay > 0 else None
        self.phema = [PowerEMA(self.net, r) for r in tc.phema_sigma_rel] if tc.snapshot_every else []
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=tc.lr, betas=(tc.adam_beta1, tc.adam_beta2),
                                          eps=tc.adam_eps, weight_decay=tc.weight_decay,
                                          **({"fused": True} if cuda else {"foreach": True}))
        self.step = 0
        self._fixed = None
        self.t_sampler = None  # improved DDPM's importance sampling of t for L_vlb
        if tc.t_sampling == "importance" and tc.loss in BOUND_LOSSES:
            self.t_sampler = LossSecondMomentSampler(self.denoiser.process.num_levels)
        self.fewstep = None  # consistency distillation / training, progressive distillation
        if tc.loss in FEWSTEP_LOSSES:
            self.fewstep = FewStep(cfg, self.denoiser, self._teacher())
        self.pairs = self.reflow_teacher = None  # reflow: the teacher's (noise, endpoint) pairs, drawn once
        if tc.loss == "reflow":
            from .reflow import shared_pairs

            self.reflow_teacher = self._teacher()
            self.pairs = shared_pairs(cfg, self.run.path, self.reflow_teacher, dist, show=progress)
        self.train_net = self.net
        if tc.compile:
            self.train_net = torch.compile(self.train_net)
        if dist.enabled:
            self.train_net = DistributedDataParallel(self.train_net, device_ids=[self.device] if cuda else None)
        self.train_denoiser = self.denoiser.with_net(self.train_net)

    # ----- checkpoints ----------------------------------------------------------------------------------

    def _teacher(self) -> Denoiser | None:
        """A distillation's frozen teacher (fewstep.teacher, a file in the run folder written by `scorekit distill`)."""
        if not self.cfg.fewstep.teacher:
            return None
        from ..run import load

        path = self.run.path / self.cfg.fewstep.teacher
        if not path.is_file():
            raise CheckpointError(f"{path}: the teacher's weights are missing (fewstep.teacher); start the "
                                  "distillation again with `scorekit distill`")
        return load(path, device=self.device)

    def _start_from_teacher(self) -> None:
        """Step 0 of a distillation: the student (and its EMA and target) start as the teacher's network."""
        teacher = self.fewstep.teacher if self.fewstep is not None else self.reflow_teacher
        if teacher is None:
            return
        from .reflow import starts_from_teacher

        if self.pairs is not None and not starts_from_teacher(self.cfg, teacher, self.net):
            return  # a reflow student on its own initialisation (fewstep.init)
        self.net.load_state_dict(teacher.net.state_dict())
        if self.ema is not None:
            self.ema.load_state_dict(self.net.state_dict())
        if self.fewstep is not None and self.fewstep.target is not None:
            self.fewstep.target.load_state_dict(self.net.state_dict())

    def resume(self) -> bool:
        latest = self.run.latest()
        if latest is None:
            self._start_from_teacher()
            return False
        ck = read_checkpoint(latest, map_location=self.device)
        try:
            self.net.load_state_dict(ck.model)
            if self.ema is not None:
                self.ema.load_state_dict(ck.ema if ck.ema is not None else ck.model)
            if ck.optimizer is not None:
                self.optimizer.load_state_dict(ck.optimizer)
            for i, e in enumerate(self.phema):  # a run that starts keeping them late starts them from the weights
                e.load_state_dict(ck.extra.get(f"phema{i}", ck.model))
            if self.t_sampler is not None and "tsampler" in ck.extra:
                self.t_sampler.load_state_dict(ck.extra["tsampler"])
            if self.fewstep is not None:
                self.fewstep.load_state_dict(ck.extra, ck.step)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{latest}: does not fit this configuration ({str(e).splitlines()[0]})") from None
        self.step = ck.step
        return True

    def save(self) -> Path | None:
        path = None
        if self.dist.main:
            path = save_checkpoint(
                self.run.checkpoint_path(self.step), config=self.cfg.to_dict(), step=self.step,
                model=self.net.state_dict(), ema=self.ema.state_dict() if self.ema else None,
                optimizer=self.optimizer.state_dict(),
                extra={**{f"phema{i}": e.state_dict() for i, e in enumerate(self.phema)},
                       **({"tsampler": self.t_sampler.state_dict()} if self.t_sampler is not None else {}),
                       **(self.fewstep.state_dict() if self.fewstep is not None else {})},
                state={"samples_seen": self.step * self.cfg.training.batch_size, "seed": self.cfg.training.seed,
                       "rng": "per-step generators seeded by (training.seed, step); nothing else to restore"})
            self.run.prune(self.cfg.training.keep_checkpoints)
        self.dist.barrier()
        return path

    # ----- one optimizer step -----------------------------------------------------------------------------

    def class_labels(self, labels: torch.Tensor | None, drop: torch.Tensor | None) -> torch.Tensor | None:
        """The labels a class-conditional model trains on: the data's, some replaced by the "no class" token
        (index num_classes) with probability training.label_dropout; None for unconditional models."""
        n = self.cfg.model.num_classes
        if not n:
            return None
        y = labels.long()
        return torch.where(drop, torch.full_like(y, n), y) if drop is not None else y

    def train_step(self, batches) -> tuple[float, float, bool]:
        cfg, dist = self.cfg, self.dist
        tc = cfg.training
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, self.step)
        shape = self.denoiser.image_shape
        draws = step_draws(cfg, self.step, shape, self.denoiser.process.num_levels, self.device,
                           self.denoiser.process, self.t_sampler)
        per_image = None  # the unweighted per-image losses of the global batch, for the importance sampler of t
        if self.t_sampler is not None:
            per_image = torch.zeros(tc.batch_size, dtype=torch.float64, device=self.device)
        torch.manual_seed(image_seed(tc.seed, 1_000_003 * self.step + dist.rank))  # dropout
        self.optimizer.zero_grad(set_to_none=True)
        self.train_net.train()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(tc.grad_accum):
            sl = micro_batch_slice(tc.batch_size, dist.world, dist.rank, tc.grad_accum, micro)
            d = draws[sl]
            images, labels = next(batches)
            x0 = preprocess(images, self.denoiser.data_range, flip=d.flip, dequant_noise=d.dequant,
                            max_value=pixel_max(self.denoiser))
            if self.pairs is not None:  # reflow: the teacher's endpoint and the noise it came from
                x0, d.noise = self.pairs.batch(self.step, sl, self.device)
            y = self.class_labels(labels, d.drop)
            aug = None
            if d.augment is not None:  # non-leaky augmentation: the transformed images and their parameters
                x0, aug = augment_apply(x0, d.augment), d.augment.vector().to(x0.device)
            if tc.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            last = micro == tc.grad_accum - 1
            with contextlib.nullcontext() if last or not dist.enabled else self.train_net.no_sync():
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    if self.fewstep is not None:
                        loss = self.fewstep.loss(self.train_denoiser, x0, d.noise, y, self.step, sl).float()
                    else:
                        loss = objective(cfg, self.train_denoiser, x0, d.t, d.noise, y, sigma=d.sigma, aug=aug,
                                         weight=d.weight, r=d.r).float()
                    if self.t_sampler is not None:
                        per_image[sl] = loss.detach().double()
                        loss = loss * d.weight.float()
                    loss = loss.mean() / tc.grad_accum
                loss.backward()
            loss_sum += loss.detach()
        loss_all = dist.sum(loss_sum) / dist.world
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip if tc.grad_clip > 0 else math.inf)
        finite = bool(torch.isfinite(loss_all) & torch.isfinite(grad_norm))
        if finite:
            if self.t_sampler is not None:
                self.t_sampler.update(draws.t.cpu(), dist.sum(per_image).cpu())
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.net)
            for e in self.phema:
                e.update(self.net, self.step + 1)
            if self.fewstep is not None:
                self.fewstep.after_step(self.net, self.step + 1)
        self.step += 1
        return float(loss_all), float(grad_norm), finite

    # ----- held-out loss ------------------------------------------------------------------------------------

    @torch.no_grad()
    def fixed_losses(self, train_source) -> dict[str, float]:
        """The objective on the fixed batches of :class:`FixedBatches` (train_loss_fixed, test_loss)."""
        if self.fewstep is not None:  # the few-step objectives have no fixed-noise form
            return {}
        if self._fixed is None:
            self._fixed = FixedBatches(self.cfg, self.denoiser, train_source, self.device)
        self.net.eval()
        out = {}
        for name, (x0, t, noise, y, sigma) in self._fixed.batches.items():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out[name] = float(objective(self.cfg, self.denoiser, x0, t, noise, y, sigma=sigma).float().mean())
        self.net.train()
        return out

    # ----- the loop ---------------------------------------------------------------------------------------

    def fit(self, source=None) -> TrainResult:
        """Train to ``training.steps`` on ``source`` (default: the config's training split)."""
        cfg, dist, run = self.cfg, self.dist, self.run
        tc = cfg.training
        source = source if source is not None else build_source(cfg.data, "train")
        stream = BatchStream(source, seed=tc.seed, global_batch=tc.batch_size, world=dist.world, rank=dist.rank,
                             accum=tc.grad_accum, num_workers=cfg.data.num_workers, device=self.device)
        batches = stream.batches(self.step)
        logger = MetricsLogger(run, dist, enabled=dist.main)
        start_step = self.step
        bar = progress(total=tc.steps, initial=self.step, desc="train", unit="step", every=tc.log_every,
                       enabled=self.progress and dist.main)
        t_start = time.perf_counter()
        try:
            interrupted = self._loop(batches, source, logger, bar)
            bar.close()
            if self.step > start_step:
                self.save()
        except WriteError as e:  # a full disk or a read-only folder: stop, and say what is intact
            bar.close()
            logger.close()
            raise TrainingError(f"stopped at step {self.step}: {e}; {self._resume_hint()}") from None
        logger.close()
        return TrainResult(run.path, self.step, interrupted=interrupted is not None,
                           train_seconds=time.perf_counter() - t_start)

    def _resume_hint(self) -> str:
        latest = self.run.latest()
        if latest is None:
            return "no checkpoint was written yet"
        return (f"the checkpoint of step {self.run.checkpoints()[-1][0]} ({latest}) is intact; once there is space "
                f"(or the folder is writable again) `scorekit train {self.run.path}` resumes from it exactly")

    def _loop(self, batches, source, logger, bar) -> str | None:
        """The optimizer steps up to training.steps; returns the name of the signal that stopped it, if any."""
        cfg, dist, run = self.cfg, self.dist, self.run
        tc = cfg.training
        nonfinite_run, window, t_last, seen_last = 0, [], time.perf_counter(), self.step
        interrupted = None
        with StopFlag() as stop:
            while self.step < tc.steps:
                loss, grad_norm, finite = self.train_step(batches)
                if not finite:
                    nonfinite_run += 1
                    logger.event(self.step, {"nonfinite": nonfinite_run, "loss": loss, "grad_norm": grad_norm})
                    if nonfinite_run >= tc.max_nonfinite:
                        raise TrainingError(
                            f"stopped at step {self.step}: {nonfinite_run} non-finite losses or gradients in a row "
                            f"(training.max_nonfinite={tc.max_nonfinite}); the last checkpoint is intact — lower "
                            "training.lr or check the data")
                else:
                    nonfinite_run = 0
                    window.append(loss)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    now = time.perf_counter()
                    ips = (self.step - seen_last) * tc.batch_size / max(now - t_last, 1e-9)
                    logger.log(self.step, {"loss": sum(window) / max(len(window), 1), "grad_norm": grad_norm,
                                           "lr": learning_rate(cfg, self.step - 1), "images_per_s": ips})
                    bar.set_postfix(loss=f"{sum(window) / max(len(window), 1):.4f}", img_s=f"{ips:.0f}")
                    window, t_last, seen_last = [], now, self.step
                bar.update(1)
                if tc.test_every and (self.step % tc.test_every == 0 or self.step == tc.steps) and dist.main:
                    logger.log(self.step, self.fixed_losses(source))
                if self.phema and self.step % tc.snapshot_every == 0 and dist.main:
                    save_snapshot(run.checkpoint_dir / "phema", self.step, self.phema)
                if self.step == guide_step(cfg) and dist.main:  # --guide self: the EMA weights now
                    weights = self.ema.module if self.ema is not None else self.net
                    keep_guide(run, cfg, self.step, weights.state_dict())
                if self.step % tc.checkpoint_every == 0 and self.step < tc.steps:
                    self.save()
                if tc.sample_every and self.step % tc.sample_every == 0 and dist.main:
                    self.sample_grid(run.samples_dir / f"step_{self.step:09d}.png")
                if dist.any(stop.raised is not None):
                    interrupted = stop.raised or "signal"
                    break
        return interrupted

    def eval_denoiser(self) -> Denoiser:
        """The EMA weights (what the papers sample with) as a denoiser."""
        d = self.denoiser.with_net(self.ema.module if self.ema is not None else self.net).eval()
        refresh_schedule(d)  # a learned schedule (VDM): the one in these weights
        return d

    def sample_grid(self, path: Path, n: int = 64) -> Path:
        from ..evaluation.generate import generate
        from ..images import save_grid

        images = generate(self.eval_denoiser(), min(n, self.cfg.sampling.num_samples), seed=self.cfg.sampling.seed,
                          batch_size=self.cfg.sampling.batch_size)
        return save_grid(path, images)


def train_run(source: str | Path, out: str | Path | None = None, overrides: list[str] | None = None, *,
              device: str | None = None, progress: bool = True, evaluate: bool = True) -> TrainResult:
    """Train a preset or YAML config into a run directory, or continue a run (see :func:`resolve_run`).
    The configuration and the training data are checked before anything is written."""
    from ..dist import setup

    run, cfg = resolve_run(source, out, overrides)
    data = build_source(cfg.data, "train")  # a bad data path fails here, before the run folder is made
    n_classes = cfg.model.num_classes
    if n_classes and data.labels is None:
        raise DataError(f"model.num_classes={n_classes}: {cfg.data.dataset} data has no labels (an image folder's "
                        "classes are its sub-folders)")
    if n_classes and int(data.labels.max()) >= n_classes:
        raise DataError(f"model.num_classes={n_classes}: the data has {int(data.labels.max()) + 1} classes")
    if cfg.data.detect_values and not cfg.data.values and run.latest() is None:
        cfg.data.values = detect_values(data)
    dist = setup(device)
    if dist.main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg)
        if n_classes:
            names = data.class_names or [str(i) for i in range(n_classes)]
            atomic_write_bytes(run.path / "classes.json", (json.dumps({"names": names}, indent=2) + "\n").encode())
        run.remove_stale_temporaries()
    dist.barrier()
    trainer = Trainer(cfg, run.path, dist, progress=progress)
    resumed = trainer.resume()
    start_step = trainer.step
    if dist.main:
        run.truncate_metrics(trainer.step)  # lines logged after the checkpoint (all of them when starting afresh)
        if resumed:
            print(f"resuming {run.path} at step {trainer.step} of {cfg.training.steps}", flush=True)
    result = trainer.fit(data)
    if result.interrupted:
        if dist.main:
            print(f"interrupted: checkpoint written at step {result.step} in {run.checkpoint_dir}; "
                  f"run `scorekit train {run.path}` to resume", flush=True)
        return result
    if dist.main:
        save_student_schedules(cfg, run.path, trainer.fewstep)
    if evaluate:
        from ..evaluation.report import final_report

        denoiser = trainer.eval_denoiser()
        denoiser.checkpoint_step = trainer.step
        result.summary = final_report(denoiser, run, dist, progress=progress,
                                      timings={"train_s": round(result.train_seconds, 1),
                                               "trained_steps": result.step - start_step})
    return result
