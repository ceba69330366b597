"""`scorekit distill`: a few-step student initialised from a teacher run of either family.

The student's run directory is an ordinary run: its config.yaml is the teacher's configuration with the method's
objective and settings, and ``teacher.safetensors`` holds the teacher's EMA weights and configuration (copied, so
the run resumes, bit for bit, even if the teacher's folder changes). Training then goes through the same loop as
any run (:mod:`scorekit.training.loop`), which initialises the student from the teacher at step 0.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import save_checkpoint
from ..config import FEWSTEP_LOSSES, Config, ConfigError, apply_overrides, from_dict
from ..errors import CheckpointError, ScorekitError
from ..run import RunDir, read_checkpoint

TEACHER_FILE = "teacher.safetensors"
METHODS = ("cd", "ect", "pd", "reflow")  # the first is the default (the best FD for its cost on the digits, README)
# Each method's settings over the teacher's configuration (steps: a fraction of the teacher's training).
# (The learning rate is the teacher's; an EMA of 0.99 averages the last ~100 steps of a short distillation, measured
# far better on the digits than 0.999, which still remembers the teacher. Consistency distillation on 10 levels, not
# the paper's 18: from the main job's teacher in 300 steps, proxy FD at 1/2/4 NFE 31.2/27.7/23.3 against 85.0/38.6/29.8
# on 18 levels and 37.6/44.8 at 1/2 NFE on 6; the teacher's larger Heun steps carry its flow in fewer updates.)
SETTINGS = {
    "cd": {"training.loss": "cd", "model.consistency": True, "sampling.sampler": "consistency", "sampling.steps": 2,
           "sampling.schedule": "auto", "training.ema_decay": 0.99, "training.warmup": 0, "fewstep.levels": 10},
    "ect": {"training.loss": "ect", "model.consistency": True, "sampling.sampler": "consistency",
            "sampling.steps": 2, "sampling.schedule": "auto", "training.ema_decay": 0.99, "training.warmup": 0,
            "fewstep.stages": 6},
    "pd": {"training.loss": "pd", "model.consistency": False, "sampling.sampler": "euler", "sampling.steps": 2,
           "sampling.schedule": "auto", "training.ema_decay": 0.0, "training.warmup": 0},
    # reflow: a flow student (the straight path, velocity) of any teacher, sampled with Euler steps uniform in t
    "reflow": {"training.loss": "reflow", "family": "flow", "process.kind": "flow", "process.num_timesteps": 1000,
               "model.output": "velocity", "model.precond": "none", "model.consistency": False,
               "model.variance": "fixedlarge", "sampling.sampler": "euler", "sampling.steps": 1,
               "sampling.schedule": "auto", "sampling.clip_denoised": False, "training.warmup": 0,
               "training.t_sampling": "u_shaped", "data.detect_values": False, "data.values": [],
               "data.augment": 0.0},  # augmenting an endpoint would break its coupling with its noise
}
# of the teacher's training steps (per step, cd costs ~2x)
STEPS_FRACTION = {"cd": 0.25, "ect": 0.4, "pd": 0.4, "reflow": 0.5}


def check_teacher(run: str | Path, method: str) -> tuple[Config, Path]:
    """The teacher's configuration and latest checkpoint, or one-line errors: not a run, a damaged or unfinished
    checkpoint, a model this method cannot use."""
    if method not in METHODS:
        raise ScorekitError(f"--method {method}: choose one of {', '.join(METHODS)}")
    path = Path(run)
    r = RunDir(path)
    if not path.is_dir() or not r.config_path.is_file():
        raise CheckpointError(f"{path}: not a run directory (no config.yaml; give the folder `scorekit train` wrote)")
    latest = r.latest()
    if latest is None:
        raise CheckpointError(f"{path}: the teacher has no checkpoint yet (train it first)")
    ck = read_checkpoint(latest, weights=False)
    try:
        cfg = from_dict(ck.config)
    except ConfigError as e:
        raise CheckpointError(f"{latest}: the stored configuration is invalid ({e})") from None
    if ck.step < cfg.training.steps:
        raise CheckpointError(f"{path}: the teacher stopped at step {ck.step} of {cfg.training.steps} (unfinished); "
                              f"finish it with `scorekit train {path}` or distil from a finished run")
    if cfg.model.arch == "classifier":
        raise ScorekitError(f"{path}: a noise-conditional classifier is not a generative model to distil")
    if cfg.training.loss in FEWSTEP_LOSSES:
        raise ScorekitError(f"--method {method}: {path} is already a few-step model (training.loss="
                            f"{cfg.training.loss}); distil its own teacher instead")
    return cfg, latest


def student_config(teacher: Config, method: str, steps: int, overrides: list[str]) -> Config:
    """The teacher's configuration with the method's objective and settings, then the user's overrides."""
    data = teacher.to_dict()
    settings = {"fewstep.teacher": TEACHER_FILE,
                "training.steps": steps or max(1, round(STEPS_FRACTION[method] * teacher.training.steps)),
                "training.snapshot_every": 0, "training.test_every": 0, "training.label_dropout": 0.0,
                "training.t_sampling": "uniform", "eval.bpd_images": 0,
                "name": f"{teacher.name}-{method}", "description": f"{method} student of {teacher.name}",
                **SETTINGS[method]}
    if method == "reflow" and teacher.model.num_classes:
        raise ScorekitError(f"--method reflow: {teacher.name} is class-conditional; reflow draws unconditional "
                            f"pairs (distil it with cd, ect or pd)")
    if method == "reflow" and teacher.model.arch != "unet":
        raise ScorekitError(f"--method reflow: the flow student is a U-Net, and {teacher.name}'s network is "
                            f"{teacher.model.arch}; reflow a U-Net teacher (e.g. ncsnv2-unet-digits)")
    if (method != "reflow" and teacher.process.kind not in ("ve", "flow") and teacher.model.precond != "edm"
            and teacher.model.output != "x0"):
        # an eps (or score, or mean) network on a VP process reaches sigma ~ 157, where x0 = x - sigma eps would
        # amplify its error a hundredfold in one jump: the student predicts v instead (Salimans & Ho 2022), the
        # same network read as v = a eps - s x0, which equals the teacher's eps at low noise (a flow's velocity
        # gives x0 = x - t u, well conditioned at every level: it keeps its output)
        settings["model.output"] = "v"
    if teacher.model.num_classes:  # the student learns the guided teacher's flow, conditioned on the class
        settings.update({"fewstep.guidance": teacher.sampling.guidance, "sampling.guidance": 1.0})
    for key, value in settings.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return from_dict(apply_overrides(data, overrides))


def prepare(run: str | Path, out: str | Path, method: str, steps: int = 0, overrides: list[str] | None = None
            ) -> RunDir:
    """Check everything, then write the student's run folder (config.yaml and teacher.safetensors); nothing is
    written when an input is bad. A folder that already holds this student is returned as it is (resume)."""
    target = RunDir(out)
    if target.config_path.is_file():
        existing = target.read_config(overrides)
        if existing.training.loss != method:
            raise ScorekitError(f"--out {out}: holds a {existing.training.loss} run, not {method}")
        return target
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ScorekitError(f"--out {out}: exists and is not an empty folder")
    teacher_cfg, latest = check_teacher(run, method)
    cfg = student_config(teacher_cfg, method, steps, overrides or [])
    ck = read_checkpoint(latest, optimizer=False)
    weights = ck.ema if ck.ema else ck.model
    if method == "reflow" and cfg.fewstep.init == "teacher":  # refused before any pair is drawn
        from ..model.factory import build_net
        from .reflow import same_shapes

        same_shapes(build_net(cfg).state_dict(), weights, cfg, str(run))
    save_checkpoint(target.path / TEACHER_FILE, config=ck.config, step=ck.step, model=weights,
                    state={"teacher_run": str(Path(run).resolve()), "teacher_checkpoint": latest.name,
                           "ema": bool(ck.ema)})
    target.write_config(cfg)
    return target


def save_student_schedules(cfg: Config, run: Path, fewstep) -> None:
    """The levels a finished student samples on (schedule auto): progressive distillation's last round's levels,
    a reflow student's Euler steps uniform in t; nothing for other runs."""
    from ..run import save_schedule

    if cfg.training.loss == "pd":
        from .fewstep import pd_schedule

        grid = pd_schedule(cfg, fewstep.sigma_min, fewstep.sigma_max)
        save_schedule(run, "euler", cfg.fewstep.pd_final, {"schedule": grid.tolist()},
                      "progressive distillation's final levels")
    if cfg.training.loss == "reflow":
        from .reflow import euler_grids

        for k, grid in euler_grids(cfg).items():
            save_schedule(run, "euler", k, {"schedule": grid}, "reflow: Euler steps uniform in t")
