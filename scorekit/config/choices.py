"""The choices a :class:`~scorekit.config.Config` allows and its error type: a leaf that both the configuration
(``config``) and its checks (``config_checks``) import, so that neither imports the other's module back."""

from __future__ import annotations

from ..errors import ScorekitError


class ConfigError(ScorekitError, ValueError):
    """A configuration problem, with a one-line message naming the key."""


# Allowed values of the string-valued keys (the single source of truth for validation and --help).
CHOICES: dict[str, tuple[str, ...]] = {
    "family": ("ddpm", "ncsn", "flow"),
    "data.dataset": ("digits", "cifar10", "folder", "zip", "lsun", "celeba"),
    "data.dequantize": ("none", "uniform"),
    "process.kind": ("vp", "ve", "subvp", "flow"),
    "process.schedule": ("linear", "quad", "const", "jsd", "warmup10", "warmup50", "cosine", "learned"),
    "process.ladder": ("geometric", "uniform"),
    "model.arch": ("unet", "ncsn", "ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest", "classifier"),
    "model.output": ("eps", "x0", "mean", "score", "sigma_score", "v", "velocity"),
    "model.variance": ("fixedlarge", "fixedsmall", "learned_range", "learned"),
    "training.loss": ("mse", "kl", "vlb", "hybrid", "dsm", "ce", "edm", "likelihood", "vdm", "cd", "ect", "ict",
                      "pd", "fm", "reflow", "meanflow"),
    "training.t_sampling": ("uniform", "importance", "logit_normal", "mode", "u_shaped"),
    "fewstep.reflow_distance": ("l2", "pseudo_huber"),
    "fewstep.init": ("auto", "teacher", "scratch"),
    "model.precond": ("none", "edm"),
    "training.precision": ("auto", "fp32", "bf16"),
    "sampling.precision": ("auto", "fp32", "bf16"),
    "sampling.sampler": ("ancestral", "langevin", "ddim", "euler", "heun", "rk45", "dpm2m", "pc",
                         "euler_ancestral", "edm_stochastic", "dpm2m_sde", "restart", "consistency",
                         "ipndm", "unipc", "dpm3m_sde", "meanflow"),
    "sampling.schedule": ("auto", "karras", "logsnr", "uniform", "quad"),
}

# The true bound's per-level terms (DDPM Eq. 5) as a loss: "kl" is DDPM's name, "vlb" improved DDPM's.
BOUND_LOSSES = ("kl", "vlb")
# Few-step objectives: consistency distillation and training (Song et al. 2023; easy consistency tuning, Geng et
# al. 2024; improved CT, Song & Dhariwal 2023) and progressive distillation (Salimans & Ho 2022).
CONSISTENCY_LOSSES = ("cd", "ect", "ict")
FEWSTEP_LOSSES = (*CONSISTENCY_LOSSES, "pd")
PAIR_SAMPLERS = ("euler", "heun", "dpm2m")  # fewstep.pair_sampler: the deterministic samplers with a step count
PAIR_SCHEDULES = ("karras", "logsnr")


def parse_pair_sampler(text: str) -> tuple[str, int, str]:
    """fewstep.pair_sampler "NAME STEPS [SCHEDULE]" as (sampler, steps, schedule), or ValueError saying why."""
    parts = text.split()
    if len(parts) not in (2, 3) or parts[0] not in PAIR_SAMPLERS or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(f"{text!r}: expected 'NAME STEPS [SCHEDULE]' with NAME one of {', '.join(PAIR_SAMPLERS)} "
                         f"(a deterministic sampler) and STEPS >= 1, e.g. 'dpm2m 5'")
    schedule = parts[2] if len(parts) == 3 else "karras"
    if schedule not in PAIR_SCHEDULES:
        raise ValueError(f"{text!r}: the schedule is {' or '.join(PAIR_SCHEDULES)}, got {schedule!r}")
    return parts[0], int(parts[1]), schedule
