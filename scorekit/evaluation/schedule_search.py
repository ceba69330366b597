"""A time-step schedule searched for one model, sampler and budget, on a cheap criterion: the FD of a few
hundred samples (digits proxy, or Inception) drawn with the same seeds for every candidate.

Stage 1 scans a family of schedules (for sigma-space samplers: EDM's rho spacing with several rho and
sigma_min; for samplers on the discrete levels: uniform, quadratic and rho-spaced levels); stage 2 moves one
interior level at a time (in log sigma, or in level index) and keeps a move when it lowers the criterion.
The winner is checked on other seeds against the sampler's default schedule and saved with the run in
``schedules.json`` (atomically), where ``schedule="auto"`` finds it: ``scorekit sample RUN --steps 10``
then uses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..images import to_uint8
from ..rng import ImageRNG
from ..samplers import DISCRETE, sample, sampling_options
from ..samplers.schedules import karras_sigmas, level_schedule, sigma_schedule


def _draw(denoiser, sampler: str, steps: int, schedule, n: int, seed: int, batch_size: int = 500) -> torch.Tensor:
    opts = {k: v for k, v in sampling_options(denoiser.config.sampling).items() if k != "schedule"}
    opts.update(steps=steps, **{"timesteps" if sampler in DISCRETE else "sigmas": schedule})
    out = []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        x = sample(denoiser, sampler, (len(idx), *denoiser.image_shape), ImageRNG(seed, idx, denoiser.device), **opts)
        out.append(to_uint8(x, denoiser.data_range))
    return torch.cat(out)


def candidates(denoiser, sampler: str, steps: int) -> dict[str, list]:
    """Stage 1's family, by name."""
    process = denoiser.process
    if sampler in DISCRETE:
        out = {k: level_schedule(process, steps, k).tolist() for k in ("uniform", "quad")}
        for rho in (1.0, 2.0, 3.0, 5.0, 7.0):
            out[f"karras rho={rho:g}"] = level_schedule(process, steps, "karras", rho).tolist()
        return {k: v for k, v in out.items() if v[-1] == process.num_levels - 1}
    out = {}
    if sampler == "consistency":  # the re-noising levels between sigma_max and sigma_min (excluded)
        for rho in (1.0, 2.0, 3.0, 5.0, 7.0, 10.0):
            for lo in (1.0, 4.0, 16.0):
                s_min = min(denoiser.sigma_min * lo, denoiser.sigma_max / 2)
                grid = karras_sigmas(steps + 1, s_min, denoiser.sigma_max, rho)
                out[f"karras rho={rho:g} sigma_min x{lo:g}"] = [*grid[:steps].tolist(), 0.0]
        return out
    for rho in (1.0, 2.0, 3.0, 5.0, 7.0, 10.0):
        for lo in (1.0, 2.0, 4.0):
            s_min = min(denoiser.sigma_min * lo, denoiser.sigma_max / 2)
            out[f"karras rho={rho:g} sigma_min x{lo:g}"] = karras_sigmas(steps, s_min, denoiser.sigma_max, rho).tolist()
    return out


def _moves(sampler: str, schedule: list, step: float, process) -> list[list]:
    """Neighbours of a schedule: one interior level moved up or down."""
    out = []
    for i in range(1, len(schedule) - 1):
        for sign in (-1, 1):
            new = list(schedule)
            if sampler in DISCRETE:  # increasing integer levels, both ends fixed
                gap = new[i + 1] - new[i - 1]
                new[i] = int(round(new[i] + sign * max(1, step * gap / 2)))
                if not new[i - 1] < new[i] < new[i + 1]:
                    continue
            else:  # decreasing sigmas ending in 0; the last positive one may move too
                if new[i] <= 0:
                    continue
                new[i] = math.exp(math.log(new[i]) + sign * step)
                if not new[i - 1] > new[i] > (new[i + 1] if new[i + 1] > 0 else 0):
                    continue
            out.append(new)
    return out


class EveryJudge:
    """A criterion that no single judge can be flattered by: the sum over the meter's judges of each one's FD over
    its FD on the first images it was given (the search's first candidate), so every judge weighs alike whatever
    its scale; ``values`` keeps each call's FDs by judge."""

    def __init__(self, meter):
        self.meter, self.first, self.values = meter, None, []

    @property
    def name(self) -> str:
        return " + ".join(self.meter.names) + " (each over its value on the first schedule)"

    def __call__(self, images_u8: torch.Tensor) -> float:
        fds = self.meter.all(images_u8)
        self.first = self.first or fds
        self.values.append(fds)
        return sum(v / self.first[k] for k, v in fds.items())


def search_schedule(denoiser, sampler: str, steps: int, criterion: Callable[[torch.Tensor], float], *, n: int = 256,
                    seed: int = 0, rounds: int = 2, validate_seeds: tuple[int, ...] = (1, 2),
                    say: Callable[[str], None] = print) -> dict:
    """Search a schedule for ``sampler`` at ``steps``; returns the schedule, its criterion on the search seed
    and on ``validate_seeds`` beside the default schedule's, and how it was found."""
    process = denoiser.process
    default = (level_schedule(process, steps, "uniform").tolist() if sampler in DISCRETE
               else sigma_schedule(denoiser, steps, "karras").tolist())

    def score(schedule, s=seed):
        return criterion(_draw(denoiser, sampler, steps, schedule, n, s))

    scored = {name: score(sch) for name, sch in candidates(denoiser, sampler, steps).items()}
    best_name = min(scored, key=scored.get)
    best, best_value = candidates(denoiser, sampler, steps)[best_name], scored[best_name]
    say(f"stage 1: {len(scored)} schedules; best {best_name}: {best_value:.3f}")
    step = 0.3 if sampler not in DISCRETE else 0.5
    moves = 0
    for r in range(rounds):
        improved = True
        while improved:
            improved = False
            for cand in _moves(sampler, best, step, process):
                value = score(cand)
                if value < best_value:
                    best, best_value, improved = cand, value, True
                    moves += 1
        say(f"stage 2, round {r + 1}: {best_value:.3f} after {moves} moves (step {step:g})")
        step /= 2
    validation = {"searched": [score(best, s) for s in validate_seeds],
                  "default": [score(default, s) for s in validate_seeds]}
    return {"schedule": best, "value": best_value, "default_value": score(default), "start": best_name,
            "moves": moves, "n": n, "seed": seed, "validation_seeds": list(validate_seeds), "validation": validation}
