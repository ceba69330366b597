"""Validation of a :class:`~scorekit.config.Config`: choices, ranges and the settings that go together.
Every problem is one :class:`~scorekit.config.ConfigError` naming the key and what is allowed."""

from __future__ import annotations

import math

from .choices import BOUND_LOSSES, CHOICES, CONSISTENCY_LOSSES, FEWSTEP_LOSSES, ConfigError, parse_pair_sampler

# ``cfg`` is a scorekit.config.Config throughout; this module does not import it, so that config (which validates
# with it) and it do not import each other.


def _positive(cfg, keys: list[str], strict: bool = True) -> None:
    for key in keys:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if (value <= 0) if strict else (value < 0):
            raise ConfigError(f"{key}: must be {'> 0' if strict else '>= 0'}, got {value}")


def validate(cfg):
    """Check choices, ranges and cross-field consistency; return ``cfg``."""
    for key, allowed in CHOICES.items():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj not in allowed:
            raise ConfigError(f"{key}: {obj!r} is not one of {', '.join(allowed)}")
    _positive(cfg, ["data.resolution", "process.num_timesteps", "process.num_levels", "model.ch", "model.ngf",
                    "model.num_res_blocks", "training.steps", "training.batch_size", "training.lr",
                    "training.grad_accum", "training.log_every", "training.checkpoint_every",
                    "training.keep_checkpoints", "training.max_nonfinite", "training.test_batch",
                    "sampling.num_samples", "sampling.batch_size", "sampling.n_steps_each", "sampling.step_lr",
                    "model.sigma_data", "training.p_std"])
    _positive(cfg, ["training.warmup", "training.grad_clip", "training.weight_decay", "sampling.steps",
                    "training.test_every", "training.sample_every", "data.centre_crop", "data.num_workers",
                    "eval.bpd_images", "eval.proxy_samples", "model.num_classes", "training.snapshot_every",
                    "data.max_images"], strict=False)
    v = cfg.data.values
    if v and (not all(isinstance(x, int) and 0 <= x <= 255 for x in v) or any(b <= a for a, b in zip(v, v[1:]))):
        raise ConfigError(f"data.values: the data's uint8 values, increasing, each in 0..255 (or [] for all 256), "
                          f"got {v}")
    b = cfg.data.bits
    if not 1 <= b <= 16:
        raise ConfigError(f"data.bits: the files' bit depth, 1..16, got {b}")
    if b != 8 and (v or cfg.data.detect_values):
        raise ConfigError(f"data.bits: {b} fixes the data's levels; leave data.values / data.detect_values unset")
    if b > 8 and cfg.data.channels != 1:
        raise ConfigError(f"data.bits: {b}-bit data are grey images (data.channels=1), got {cfg.data.channels}")
    if cfg.data.channels not in (1, 3):
        raise ConfigError(f"data.channels: must be 1 or 3, got {cfg.data.channels}")
    if cfg.model.num_classes and cfg.model.arch == "ncsn":
        raise ConfigError("model.num_classes: NCSN v1's norms are conditioned on the noise level; class labels need "
                          "model.arch=unet or an ncsnv2 network")
    if cfg.training.loss == "edm" and cfg.model.precond != "edm":
        raise ConfigError("training.loss=edm needs EDM's preconditioning (model.precond=edm)")
    if cfg.model.precond == "edm" and cfg.training.loss not in ("edm", *FEWSTEP_LOSSES):
        raise ConfigError(f"model.precond=edm (EDM's preconditioning) trains with training.loss=edm or a few-step "
                          f"objective ({', '.join(FEWSTEP_LOSSES)}), got {cfg.training.loss}")
    if cfg.model.precond == "edm" and (cfg.model.output != "x0" or cfg.model.variance.startswith("learned")
                                       or cfg.model.arch == "ncsn"):
        raise ConfigError("model.precond=edm: the network's D is the x0 estimate (model.output=x0), with a fixed "
                          "variance and a network that reads ln(sigma)/4 (a U-Net or an NCSNv2 RefineNet)")
    if not cfg.training.phema_sigma_rel or not all(0 < v < 0.28 for v in cfg.training.phema_sigma_rel):
        raise ConfigError(f"training.phema_sigma_rel: a list of relative EMA widths in (0, 0.28), got "
                          f"{cfg.training.phema_sigma_rel}")
    if cfg.data.augment and cfg.model.arch == "classifier":
        raise ConfigError("data.augment: the noise-conditional classifier takes no augmentation parameters")
    if not 0.0 <= cfg.data.augment <= 1.0:
        raise ConfigError(f"data.augment: a probability in [0, 1], got {cfg.data.augment}")
    if (cfg.model.arch == "classifier") != (cfg.training.loss == "ce"):
        raise ConfigError("model.arch=classifier (a noise-conditional classifier) and training.loss=ce go together")
    if cfg.model.arch == "classifier" and not cfg.model.num_classes:
        raise ConfigError("model.arch=classifier: set model.num_classes")
    if not 0.0 <= cfg.training.label_dropout < 1.0:
        raise ConfigError(f"training.label_dropout: must be in [0, 1), got {cfg.training.label_dropout}")
    if cfg.training.label_dropout and not cfg.model.num_classes:
        raise ConfigError("training.label_dropout: needs a class-conditional model (model.num_classes > 0)")
    if cfg.sampling.guidance < 0:
        raise ConfigError(f"sampling.guidance: must be >= 0, got {cfg.sampling.guidance}")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {cfg.model.dropout}")
    if not 0.0 <= cfg.training.guide_at < 1.0:
        raise ConfigError(f"training.guide_at: the fraction of the steps at which the guide is kept, in [0, 1) "
                          f"(0: none), got {cfg.training.guide_at}")
    if not 0.0 <= cfg.training.ema_decay < 1.0:
        raise ConfigError(f"training.ema_decay: must be in [0, 1), got {cfg.training.ema_decay}")
    for key in ("adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(cfg.training, key) < 1.0:
            raise ConfigError(f"training.{key}: must be in [0, 1), got {getattr(cfg.training, key)}")
    p = cfg.process
    if not 0 < p.beta_start <= p.beta_end <= 1:
        raise ConfigError(f"process.beta_start/beta_end: need 0 < beta_start <= beta_end <= 1, "
                          f"got {p.beta_start} and {p.beta_end}")
    if not p.sigma_begin > p.sigma_end > 0:
        raise ConfigError(f"process.sigma_begin/sigma_end: need sigma_begin > sigma_end > 0, "
                          f"got {p.sigma_begin} and {p.sigma_end}")
    if p.kind == "ve" and p.num_levels < 2:
        raise ConfigError(f"process.num_levels: need at least 2 levels, got {p.num_levels}")
    levels = p.num_levels if p.kind == "ve" else p.num_timesteps
    if cfg.sampling.sampler == "ancestral" and cfg.sampling.steps > levels:
        raise ConfigError(f"sampling.steps: the ancestral sampler takes at most the {levels} noise levels, "
                          f"got {cfg.sampling.steps}")
    m = cfg.model
    if m.arch in ("unet", "classifier"):
        if not m.ch_mult or any(c <= 0 for c in m.ch_mult):
            raise ConfigError(f"model.ch_mult: need a non-empty list of positive integers, got {m.ch_mult}")
        groups = m.norm_groups or (8 if m.arch == "classifier" else 0)
        if m.norm_groups < 0 or (groups and any(m.ch * c % groups for c in m.ch_mult)):
            raise ConfigError(f"model.norm_groups: {groups} must divide the channels of every level "
                              f"({[m.ch * c for c in m.ch_mult]})")
        if cfg.data.resolution % 2 ** (len(m.ch_mult) - 1):
            raise ConfigError(f"model.ch_mult: {len(m.ch_mult)} levels need data.resolution divisible by "
                              f"{2 ** (len(m.ch_mult) - 1)}, got {cfg.data.resolution}")
    if m.variance in ("learned_range", "learned") and cfg.training.loss == "mse":
        raise ConfigError("training.loss: a learned variance is trained with kl or hybrid, not mse")
    if cfg.training.loss == "hybrid" and m.variance not in ("learned_range", "learned"):
        raise ConfigError("training.loss: hybrid needs a learned variance (model.variance=learned_range or learned)")
    if m.variance in ("learned_range", "learned") and m.arch != "unet":
        raise ConfigError(f"model.variance: a learned variance needs the U-Net (model.arch=unet), got {m.arch}")
    if m.output == "mean" and p.kind == "ve":
        raise ConfigError("model.output: the posterior-mean parameterization needs process.kind=vp or subvp")
    if cfg.family == "ddpm" and p.kind == "ve":
        raise ConfigError("family: ddpm is the VP process (process.kind=vp or subvp); NCSN's VE process is "
                          "family: ncsn")
    if cfg.family == "ncsn" and p.kind != "ve":
        raise ConfigError("family: ncsn is the VE process (process.kind=ve); DDPM's VP process is family: ddpm")
    if (cfg.family == "flow") != (p.kind == "flow"):
        raise ConfigError(f"family: flow and process.kind=flow go together (got family={cfg.family}, "
                          f"process.kind={p.kind})")
    tc = cfg.training
    if tc.loss == "likelihood" and m.arch != "unet":
        raise ConfigError(f"training.loss: likelihood trains at fractional noise levels, which needs the U-Net "
                          f"(model.arch=unet), got {m.arch}")
    if tc.loss == "likelihood" and m.variance != "fixedlarge":
        raise ConfigError("training.loss: likelihood trains eps only; use model.variance=fixedlarge")
    if tc.t_sampling == "importance" and tc.loss not in (*BOUND_LOSSES, "likelihood"):
        raise ConfigError(f"training.t_sampling: importance sampling is for the bound (training.loss=vlb, kl or "
                          f"likelihood), got training.loss={tc.loss}")
    _check_vdm(cfg)
    _check_fewstep(cfg)
    _check_flow(cfg)
    _check_meanflow(cfg)
    return cfg


FLOW_LOSSES = ("fm", "reflow", "meanflow", "edm", "mse", "cd", "ect", "ict", "pd")


def _check_flow(cfg) -> None:
    """The straight path (process.kind=flow) and its objective (training.loss=fm)."""
    p, m, tc = cfg.process, cfg.model, cfg.training
    if tc.loss in ("fm", "reflow", "meanflow") and p.kind != "flow":
        raise ConfigError(f"training.loss: {tc.loss} is the flow-matching loss of the straight path "
                          f"(process.kind=flow), got process.kind={p.kind}")
    if tc.loss == "reflow" and not cfg.fewstep.teacher:
        raise ConfigError("training.loss=reflow: learns a teacher's pairs; start it with `scorekit distill RUN "
                          "--method reflow` (fewstep.teacher is empty)")
    for key, value, default in (("reflow_distance", cfg.fewstep.reflow_distance, "l2"),
                                ("pair_sampler", cfg.fewstep.pair_sampler, ""), ("init", cfg.fewstep.init, "auto")):
        if value != default and tc.loss != "reflow":
            raise ConfigError(f"fewstep.{key}: {value} is a setting of a reflow student (training.loss=reflow), "
                              f"not of training.loss={tc.loss}")
    if cfg.fewstep.pair_sampler:
        try:
            parse_pair_sampler(cfg.fewstep.pair_sampler)
        except ValueError as e:
            raise ConfigError(f"fewstep.pair_sampler: {e}") from None
    if cfg.fewstep.pairs < 1:
        raise ConfigError(f"fewstep.pairs: the number of reflow pairs, >= 1, got {cfg.fewstep.pairs}")
    if tc.t_sampling in ("logit_normal", "mode", "u_shaped") and tc.loss not in ("fm", "reflow", "meanflow"):
        raise ConfigError(f"training.t_sampling: {tc.t_sampling} draws the flow's time for training.loss=fm, "
                          f"reflow or meanflow, got training.loss={tc.loss}")
    if tc.mode_scale <= -1 or tc.mode_scale >= 2 / (math.pi - 2):
        raise ConfigError(f"training.mode_scale: SD3's mode sampling is monotone for -1 < s < 1.75, got "
                          f"{tc.mode_scale}")
    if p.kind != "flow":
        return
    if tc.loss not in FLOW_LOSSES:
        raise ConfigError(f"training.loss: {tc.loss} is a loss of the discrete chain or the VE / VP families; a flow "
                          f"(process.kind=flow) trains with {', '.join(FLOW_LOSSES)}")
    if m.variance.startswith("learned"):
        raise ConfigError(f"model.variance: a flow has no learned reverse variance (its chain is deterministic "
                          f"between levels); use fixedlarge, got {m.variance}")
    if m.arch != "unet":
        raise ConfigError(f"model.arch: a flow's network reads the continuous time 1000 t, which needs the U-Net "
                          f"(model.arch=unet), got {m.arch}")
    if m.output in ("mean", "score", "sigma_score", "v"):
        raise ConfigError(f"model.output: a flow's network predicts velocity (eps - x0), eps or x0, got {m.output}")


def _check_meanflow(cfg) -> None:
    """MeanFlow: a flow U-Net with a second time input, trained with the MeanFlow identity."""
    m, tc = cfg.model, cfg.training
    if tc.loss == "meanflow" and not m.mean_flow:
        raise ConfigError("training.loss: meanflow trains the average velocity u(z, r, t), which needs a network "
                          "with a second time input (model.mean_flow: true)")
    if m.mean_flow and (cfg.process.kind != "flow" or m.arch != "unet" or m.output != "velocity"
                        or m.precond != "none"):
        raise ConfigError("model.mean_flow: the average velocity is a velocity on the straight path read by the "
                          "U-Net (process.kind=flow, model.arch=unet, model.output=velocity, model.precond=none), "
                          f"got kind={cfg.process.kind}, arch={m.arch}, output={m.output}, precond={m.precond}")
    if tc.loss == "meanflow" and tc.t_sampling not in ("uniform", "logit_normal"):
        raise ConfigError(f"training.t_sampling: MeanFlow draws (t, r) uniform or logit-normal, got {tc.t_sampling}")
    if not 0 <= tc.meanflow_ratio <= 1:
        raise ConfigError(f"training.meanflow_ratio: a fraction in [0, 1], got {tc.meanflow_ratio}")
    if tc.adaptive_p < 0:
        raise ConfigError(f"training.adaptive_p: the adaptive weight's power, >= 0, got {tc.adaptive_p}")


def _check_vdm(cfg) -> None:
    p, m, tc = cfg.process, cfg.model, cfg.training
    if p.schedule == "learned" and (p.kind != "vp" or tc.loss != "vdm"):
        raise ConfigError("process.schedule: learned is VDM's schedule: it needs process.kind=vp and "
                          f"training.loss=vdm, got kind={p.kind}, loss={tc.loss}")
    if p.schedule == "learned" and not p.gamma_min < p.gamma_max:
        raise ConfigError(f"process.gamma_min: must be below process.gamma_max, got {p.gamma_min} >= {p.gamma_max}")
    if tc.loss == "vdm" and (p.kind != "vp" or m.arch != "unet" or m.variance not in ("fixedsmall", "fixedlarge")
                             or m.precond != "none"):
        raise ConfigError("training.loss: vdm trains eps on the VP process with the U-Net and a fixed variance "
                          "(process.kind=vp, model.arch=unet, model.variance=fixedsmall, model.precond=none)")
    if tc.loss == "vdm" and m.output != "eps":
        # x0 / v / score outputs convert to eps with the schedule tables built at start-up, not with the schedule
        # the bound trains (after gamma_1 moves 5 -> 8, alpha at t = 0.9 is 0.053 from gamma, 0.200 from the tables)
        raise ConfigError(f"model.output: vdm's bound is written for an eps network (its conversions would use a "
                          f"stale schedule); got model.output={m.output}, use model.output=eps")
    if tc.loss == "vdm" and cfg.data.bits > 8:
        raise ConfigError(f"training.loss: vdm's decoder is a categorical over the data's values, up to 8 bits; "
                          f"data.bits={cfg.data.bits}")
    if m.fourier and m.arch != "unet":
        raise ConfigError(f"model.fourier: Fourier features are an input of the U-Net, got model.arch={m.arch}")
    if any(not 0 <= n <= 12 for n in m.fourier):
        raise ConfigError(f"model.fourier: exponents n of sin(2^n pi x) must be in 0..12, got {m.fourier}")
    if tc.vdm_steps < 0 or (tc.vdm_steps and tc.loss != "vdm"):
        raise ConfigError(f"training.vdm_steps: a number of steps >= 0 for training.loss=vdm, got {tc.vdm_steps}")


def _check_fewstep(cfg) -> None:
    """Consistency models and distillation (the fewstep section)."""
    f, tc, m = cfg.fewstep, cfg.training, cfg.model
    if m.consistency != (tc.loss in CONSISTENCY_LOSSES):
        raise ConfigError(f"model.consistency=true and training.loss {' / '.join(CONSISTENCY_LOSSES)} go together "
                          f"(got model.consistency={str(m.consistency).lower()}, training.loss={tc.loss})")
    if tc.loss in ("cd", "pd") and not f.teacher:
        raise ConfigError(f"training.loss={tc.loss}: distils a teacher; start it with `scorekit distill RUN "
                          f"--method {tc.loss}` (fewstep.teacher is empty)")
    if tc.loss in FEWSTEP_LOSSES and m.arch not in ("unet", "ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest"):
        raise ConfigError(f"training.loss={tc.loss}: evaluates the network at any noise level, which needs a network "
                          f"that reads a continuous level (a U-Net or an NCSNv2 RefineNet), got model.arch={m.arch}")
    if f.sigma_min < 0 or f.sigma_max < 0 or (f.sigma_min and f.sigma_max and f.sigma_max <= f.sigma_min):
        raise ConfigError(f"fewstep.sigma_min / sigma_max: need 0 <= sigma_min < sigma_max (0: the model's own), got "
                          f"{f.sigma_min} and {f.sigma_max}")
    checks = [("fewstep.levels", f.levels >= 2, "at least 2"), ("fewstep.target_ema", 0 <= f.target_ema < 1,
              "in [0, 1)"), ("fewstep.p_std", f.p_std > 0, "> 0"), ("fewstep.ect_q", f.ect_q > 1, "> 1"),
              ("fewstep.stages", f.stages >= 1, ">= 1"), ("fewstep.rho", f.rho > 0, "> 0"),
              ("fewstep.ict_s0", 1 <= f.ict_s0 <= f.ict_s1, "in 1..fewstep.ict_s1"),
              ("fewstep.huber_c", f.huber_c >= 0, ">= 0 (0: 0.00054 sqrt(dim))"),
              ("fewstep.guidance", f.guidance >= 0, ">= 0"),
              ("fewstep.pd_final", 1 <= f.pd_final < f.pd_steps and (f.pd_steps // f.pd_final) & (
                  f.pd_steps // f.pd_final - 1) == 0 and f.pd_steps % f.pd_final == 0,
               "a power-of-two fraction of fewstep.pd_steps (64 -> 32 -> ... -> pd_final)")]
    for key, ok, what in checks:
        if not ok:
            value = getattr(f, key.split(".")[1])
            raise ConfigError(f"{key}: must be {what}, got {value}")
