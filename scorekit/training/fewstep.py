"""Few-step objectives: the student learns to generate in one or a few network evaluations.

* ``cd``: consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, Algorithm 2): adjacent levels
  sigma_n < sigma_{n+1} of an N-level Karras grid, x_{n+1} = x + sigma_{n+1} z, one Heun step of the teacher's
  probability-flow ODE down to sigma_n, loss d(f_theta(x_{n+1}, sigma_{n+1}), f_target(x_n, sigma_n)) with the
  target network an EMA (mu) of the student.
* ``ect``: easy consistency tuning (Geng et al. 2024): from the teacher's weights, no teacher and no target
  network; t ~ lognormal, r = t (1 - q^-(s+1) (1 + 8 sigmoid(-t))) clamped at 0, with the stage s growing so that
  t - r halves (dt -> 0); d(f(x + t n, t), sg f(x + r n, r)) / (t - r), both evaluations with the same noise and
  the same dropout draw.
* ``ict``: improved consistency training from scratch (Song & Dhariwal 2023): the N(k) doubling curriculum
  (s0 = 10, s1 = 1280), levels drawn from a discretised lognormal (P_mean -1.1, P_std 2.0), weight
  1 / (sigma_{i+1} - sigma_i), the stop-gradient student as its own target.
* ``pd``: progressive distillation (Salimans & Ho 2022): the student learns in one deterministic (DDIM) step what
  the teacher does in two; N halves every round and the student becomes the teacher; loss weight max(SNR, 1)
  ("truncated SNR"), SNR = 1 / sigma^2. One grid serves every round (Algorithm 2's t = i / N, N halving): round r's
  teacher steps between every 2^r-th level of the first round's N-level Karras grid, so each round's teacher runs on
  exactly the levels its student was trained to jump between.

The metric of the consistency objectives is the pseudo-Huber distance over the whole image,
d(x, y) = sqrt(||x - y||^2 + c^2) - c with c = 0.00054 sqrt(dim) (Song & Dhariwal 2023), not per element.
Every draw of step k comes from a generator seeded by (training.seed, k), so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import math

import torch

from ..config import Config
from ..model.denoiser import Denoiser
from ..model.factory import fewstep_sigma_max
from ..model.guidance import conditional
from ..processes.base import expand_like
from ..rng import image_seed
from .losses import huber_c, pseudo_huber

_STREAM = 2**41  # the few-step draws' own streams, apart from step_draws'


def karras_grid(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """n increasing levels sigma_min = sigma_1 < ... < sigma_n = sigma_max, evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + ramp * (hi - lo)) ** rho


def ict_levels(cfg: Config, step: int) -> int:
    """N(k) of improved CT: min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2 floor(s1 / s0) + 1))."""
    f = cfg.fewstep
    k_prime = max(1, math.floor(cfg.training.steps / (math.log2(math.floor(f.ict_s1 / f.ict_s0)) + 1)))
    return min(f.ict_s0 * 2 ** (step // k_prime), f.ict_s1) + 1


def lognormal_index_weights(grid: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """iCT's p(i) for the pair (sigma_i, sigma_{i+1}): erf((ln sigma_{i+1} - P_mean) / (sqrt 2 P_std)) - erf(...)."""
    e = torch.erf((grid.log() - p_mean) / (math.sqrt(2) * p_std))
    w = (e[1:] - e[:-1]).clamp_min(0)
    return w / w.sum()


def ect_r(t: torch.Tensor, stage: int, q: float) -> torch.Tensor:
    """ECT's r(t) at a stage: t (1 - q^-(stage+1) (1 + 8 sigmoid(-t))), clamped at 0."""
    return (t * (1 - q ** -(stage + 1) * (1 + 8 * torch.sigmoid(-t)))).clamp_min(0)


def ddim_step(D, x: torch.Tensor, s_from: torch.Tensor, s_to: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step in sigma-space: x' = D + (s_to / s_from)(x - D) (= Euler on the PF-ODE)."""
    d = D(x, s_from)
    return d + expand_like(s_to / s_from, x) * (x - d)


def heun_step(D, x: torch.Tensor, s_from: torch.Tensor, s_to: torch.Tensor) -> torch.Tensor:
    """One Heun step of dx/dsigma = (x - D(x; sigma)) / sigma from s_from down to s_to > 0 (EDM Algorithm 1)."""
    h = expand_like(s_to - s_from, x)
    d1 = (x - D(x, s_from)) / expand_like(s_from, x)
    x1 = x + h * d1
    d2 = (x1 - D(x1, s_to)) / expand_like(s_to, x)
    return x + h * (d1 + d2) / 2


def pd_target(D, x: torch.Tensor, s: torch.Tensor, s_mid: torch.Tensor, s_end: torch.Tensor) -> torch.Tensor:
    """Progressive distillation's target x~ (Salimans & Ho 2022, Algorithm 2, in sigma-space): the teacher's two
    DDIM steps s -> s_mid -> s_end land on x''; x~ is the x0 estimate with which one DDIM step s -> s_end lands
    there too: x~ = (s x'' - s_end x) / (s - s_end)."""
    x2 = ddim_step(D, ddim_step(D, x, s, s_mid), s_mid, s_end)
    return (expand_like(s, x) * x2 - expand_like(s_end, x) * x) / expand_like(s - s_end, x)


def pd_grid(cfg: Config, sigma_min: float, sigma_max: float, steps: int) -> torch.Tensor:
    """The deterministic sampler's levels for ``steps`` steps: Karras levels and a final 0 (decreasing)."""
    grid = karras_grid(steps, sigma_min, sigma_max, cfg.fewstep.rho).flip(0)
    return torch.cat([grid, torch.zeros(1, dtype=torch.float64)])


def pd_rounds(cfg: Config) -> int:
    return max(1, round(math.log2(cfg.fewstep.pd_steps / cfg.fewstep.pd_final)))


def pd_teacher_levels(cfg: Config, sigma_min: float, sigma_max: float, r: int) -> torch.Tensor:
    """Round r's teacher levels (decreasing, ending in 0): every 2^r-th level of the first round's grid of
    ``fewstep.pd_steps`` steps. The student of round r jumps between every other one of them, i.e. round r + 1's."""
    return pd_grid(cfg, sigma_min, sigma_max, cfg.fewstep.pd_steps)[:: 2**r]


def pd_schedule(cfg: Config, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The final student's levels: every other level of the last round's teacher grid (``fewstep.pd_final`` steps)."""
    return pd_teacher_levels(cfg, sigma_min, sigma_max, pd_rounds(cfg))


class FewStep:
    """The state of a few-step objective beside the student: the frozen teacher (cd, pd), the target network
    (cd's EMA), and the current round (pd). ``loss`` gives per-image losses of one micro-batch; ``after_step``
    updates the target and switches rounds; ``state_dict`` goes into the checkpoint."""

    def __init__(self, cfg: Config, student: Denoiser, teacher: Denoiser | None):
        self.cfg, self.kind = cfg, cfg.training.loss
        f = cfg.fewstep
        self.sigma_min = f.sigma_min or student.sigma_min
        self.sigma_max = fewstep_sigma_max(cfg)
        self.c = huber_c(cfg, math.prod(student.image_shape))
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.student = student  # pd: from the second round on, the teacher is a copy of the student (its outputs)
        self.target = None
        if self.kind == "cd":  # the target network: an EMA of the student, initialised from it
            self.target = copy.deepcopy(student.net).eval().requires_grad_(False)
        self.round = 0
        if self.kind in ("cd", "pd") and teacher is None:
            raise ValueError(f"training.loss={self.kind} needs a teacher (fewstep.teacher)")

    # ----- the teacher's denoiser and the draws -------------------------------------------------------------------

    def _teacher_D(self, y: torch.Tensor | None):
        t = self.teacher
        if y is not None:
            t = conditional(t, y, guidance=self.cfg.fewstep.guidance)
        return lambda x, s: t.denoise(x, s).to(x.dtype)

    def _generator(self, step: int, device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(image_seed(self.cfg.training.seed, _STREAM + step))
        return g

    # ----- the loss ---------------------------------------------------------------------------------------------

    def loss(self, student: Denoiser, x0: torch.Tensor, noise: torch.Tensor, y: torch.Tensor | None, step: int,
             sl: slice) -> torch.Tensor:
        """Per-image loss of the micro-batch ``sl`` of step ``step``'s global batch (its images ``x0``, its noise)."""
        B, device = self.cfg.training.batch_size, x0.device
        g = self._generator(step, device)
        if self.kind == "cd":
            grid = karras_grid(self.cfg.fewstep.levels, self.sigma_min, self.sigma_max, self.cfg.fewstep.rho).to(device)
            n = torch.randint(0, len(grid) - 1, (B,), generator=g, device=device)[sl]
            s_lo, s_hi = grid[n], grid[n + 1]
            x_hi = x0 + expand_like(s_hi, x0) * noise
            with torch.no_grad():
                x_lo = heun_step(self._teacher_D(y), x_hi, s_hi, s_lo)
                target = student.with_net(self.target).consistency_fn(x_lo, s_lo, y)
            return pseudo_huber(student.consistency_fn(x_hi, s_hi, y), target, self.c)
        if self.kind == "ict":
            grid = karras_grid(ict_levels(self.cfg, step), self.sigma_min, self.sigma_max, self.cfg.fewstep.rho)
            p = lognormal_index_weights(grid, self.cfg.fewstep.p_mean, self.cfg.fewstep.p_std).to(device)
            grid = grid.to(device)
            i = torch.multinomial(p, B, replacement=True, generator=g)[sl]
            return self._self_target(student, x0, noise, y, grid[i + 1], grid[i])
        if self.kind == "ect":
            f = self.cfg.fewstep
            z = torch.randn(B, generator=g, device=device, dtype=torch.float64)[sl]
            t = (f.p_mean + f.p_std * z).exp().clamp(self.sigma_min, self.sigma_max)
            stage = step * f.stages // self.cfg.training.steps
            return self._self_target(student, x0, noise, y, t, ect_r(t, stage, f.ect_q))
        # pd
        grid = pd_teacher_levels(self.cfg, self.sigma_min, self.sigma_max, self.round_of(step)).to(device)
        j = torch.randint(0, self.student_steps(step), (B,), generator=g, device=device)[sl]
        s, s_mid, s_end = grid[2 * j], grid[2 * j + 1], grid[2 * j + 2]
        x = x0 + expand_like(s, x0) * noise
        with torch.no_grad():
            target = pd_target(self._teacher_D(y), x, s, s_mid, s_end)
        pred = student.denoise(x, s).to(x0.dtype) if y is None else conditional(student, y).denoise(x, s)
        snr = (1 / s**2).clamp_min(1.0)
        return snr.to(x0.dtype) * (pred.float() - target.float()).pow(2).flatten(1).mean(1)

    def _self_target(self, student: Denoiser, x0, noise, y, s_hi: torch.Tensor, s_lo: torch.Tensor) -> torch.Tensor:
        """d(f(x + s_hi n, s_hi), sg f(x + s_lo n, s_lo)) / (s_hi - s_lo), the two evaluations under the same
        dropout draw; below sigma_min the target is the noisy point itself (f(x, sigma_min) = x)."""
        cuda = x0.device.type == "cuda"
        cpu_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state(x0.device) if cuda else None
        f_hi = student.consistency_fn(x0 + expand_like(s_hi, x0) * noise, s_hi, y)
        torch.set_rng_state(cpu_state)
        if cuda:
            torch.cuda.set_rng_state(cuda_state, x0.device)
        with torch.no_grad():
            x_lo = x0 + expand_like(s_lo, x0) * noise
            f_lo = student.consistency_fn(x_lo, s_lo.clamp_min(self.sigma_min), y)
            at_boundary = (s_lo <= self.sigma_min).reshape(-1, *[1] * (x_lo.ndim - 1))
            f_lo = torch.where(at_boundary, x_lo, f_lo)
        weight = 1 / (s_hi - s_lo).clamp_min(1e-12)
        return weight.to(x0.dtype) * pseudo_huber(f_hi, f_lo, self.c)

    # ----- progressive distillation's rounds ----------------------------------------------------------------------

    def steps_per_round(self) -> int:
        return max(1, math.ceil(self.cfg.training.steps / pd_rounds(self.cfg)))

    def round_of(self, step: int) -> int:
        return min(step // self.steps_per_round(), pd_rounds(self.cfg) - 1)

    def student_steps(self, step: int) -> int:
        """The student's steps in the round of ``step`` (the teacher takes twice as many)."""
        return max(1, self.cfg.fewstep.pd_steps // 2 ** (self.round_of(step) + 1))

    # ----- after the optimizer step -------------------------------------------------------------------------------

    @torch.no_grad()
    def after_step(self, net: torch.nn.Module, step: int) -> None:
        """``step``: updates done so far. cd: target <- mu target + (1 - mu) student; pd: at a round's end the
        student becomes the teacher."""
        if self.target is not None:
            torch._foreach_lerp_(list(self.target.parameters()), list(net.parameters()),
                                 1 - self.cfg.fewstep.target_ema)
            for b, nb in zip(self.target.buffers(), net.buffers()):
                b.copy_(nb)
        if self.kind == "pd" and step < self.cfg.training.steps and self.round_of(step) > self.round:
            self.round = self.round_of(step)
            self._student_as_teacher(net.state_dict())

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Checkpoint groups: the target network (cd) and the current round's teacher (pd, after round 0)."""
        out = {}
        if self.target is not None:
            out["target"] = self.target.state_dict()
        if self.kind == "pd" and self.round > 0:
            out["pdteacher"] = self.teacher.net.state_dict()
        return out

    def load_state_dict(self, groups: dict[str, dict[str, torch.Tensor]], step: int) -> None:
        if self.target is not None and "target" in groups:
            self.target.load_state_dict(groups["target"])
        if self.kind == "pd":
            self.round = self.round_of(step) if step < self.cfg.training.steps else self.round_of(step - 1)
            if self.round > 0:
                self._student_as_teacher(groups["pdteacher"])

    def _student_as_teacher(self, weights: dict[str, torch.Tensor]) -> None:
        """The next round's teacher: the student's parametrisation (it may differ from the first teacher's, e.g.
        v instead of eps) with these weights, frozen."""
        net = copy.deepcopy(self.student.net)
        net.load_state_dict(weights)
        self.teacher = self.student.with_net(net.eval().requires_grad_(False)).eval()
