"""Reflow (Liu, Gong & Liu 2022, "rectified flow"): a teacher of any family maps noise z ~ N(0, I) through its
deterministic sampler to an endpoint x = ODE(z); a flow student then learns the straight path between the pair,
x_t = (1 - t) x + t z, with the flow-matching loss (training.loss=reflow). Its paths are straighter than the
teacher's, so one or two Euler steps go far.

The pairs are drawn once, in chunks of CHUNK kept in RUN/pairs/ (each written atomically, pair i from the generator
(fewstep.pair_seed, i)), so an interrupted generation resumes where it stopped and a resumed run trains on the same
pairs. The teacher's endpoints are mapped from its data range to the student's [-1, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import atomic_save_file
from ..config.choices import parse_pair_sampler
from ..images import atomic_write_bytes
from ..progress import progress
from ..rng import ImageRNG, image_seed

CHUNK = 1000
PAIRS_DIR = "pairs"
# the deterministic sampler a teacher's pairs are drawn with: its own if it is an ODE solver, else its ODE twin
ODE_TWIN = {"dpm2m_sde": "dpm2m", "euler_ancestral": "euler", "edm_stochastic": "heun", "restart": "heun",
            "ddim": "euler"}
ODE_SAMPLERS = ("euler", "heun", "dpm2m", "rk45")
FALLBACK = ("heun", 18, "karras")  # for chain samplers (ancestral, Langevin, predictor-corrector): EDM's 35 NFE


def pair_sampler(cfg, chosen: str = "") -> tuple[str, int, str]:
    """(sampler, steps, schedule) of a teacher's pairs: ``chosen`` (fewstep.pair_sampler) if given, else its default
    sampler's deterministic counterpart."""
    if chosen:
        return parse_pair_sampler(chosen)
    sc = cfg.sampling
    name = ODE_TWIN.get(sc.sampler, sc.sampler)
    if name not in ODE_SAMPLERS:
        return FALLBACK
    schedule = sc.schedule if sc.schedule != "auto" else "karras"
    return name, sc.steps or {"euler": 50, "heun": 18, "dpm2m": 20, "rk45": 0}[name], schedule


@torch.no_grad()
def draw_pairs(teacher, index: range, seed: int, sampler: tuple[str, int, str],
               shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, ...]:
    """(z, x) for pairs ``index``: z ~ N(0, I) from the pair's own generator, x the teacher's ODE endpoint from
    the prior sample whose standardised noise is z, mapped to [-1, 1] (float32, on the CPU). ``shape``: one
    sample's shape (default the teacher's image shape)."""
    from ..samplers import sample
    from ..samplers.common import prior_std_hat
    from ..samplers.schedules import sigma_schedule

    name, steps, schedule = sampler
    shape = (len(index), *(shape or teacher.image_shape))
    rng = ImageRNG(seed, index, teacher.device)
    z = rng.randn(*shape[1:]).to(teacher.device)
    options = {"clip_denoised": False}
    if name == "rk45":
        x_T = z * prior_std_hat(teacher, teacher.sigma_max)
    else:
        sig = sigma_schedule(teacher, steps, schedule)
        x_T = z * prior_std_hat(teacher, float(sig[0]))
        options["sigmas"] = sig
    x = sample(teacher, name, shape, ImageRNG(seed + 1, index, teacher.device), x_T=x_T, **options)
    lo, hi = teacher.data_range
    return z.float().cpu(), (-1.0 + 2.0 * (x.float().cpu() - lo) / (hi - lo))


def _chunk(folder: Path, start: int) -> Path:
    return folder / f"chunk_{start:08d}.safetensors"


def draw_missing(cfg, run_dir: Path, teacher, *, show: bool = True) -> None:
    """Draw the pairs of RUN/pairs/ that are not there yet (all of them the first time), chunk by chunk; pairs.json
    records how they are drawn, and a folder drawn otherwise is refused."""
    folder = Path(run_dir) / PAIRS_DIR
    n, seed = cfg.fewstep.pairs, cfg.fewstep.pair_seed
    sampler = pair_sampler(teacher.config, cfg.fewstep.pair_sampler)
    meta = {"pairs": n, "seed": seed, "sampler": list(sampler), "chunk": CHUNK}
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "pairs.json"
    if meta_path.is_file():
        if json.loads(meta_path.read_text()) != meta:
            from ..errors import CheckpointError

            raise CheckpointError(f"{meta_path}: pairs drawn with other settings ({meta_path.read_text().strip()}); "
                                  f"start the reflow in a new folder")
    else:
        atomic_write_bytes(meta_path, (json.dumps(meta) + "\n").encode())
    todo = [c for c in range(0, n, CHUNK) if not _chunk(folder, c).is_file()]
    bar = progress(total=n, initial=n - sum(min(CHUNK, n - c) for c in todo), desc="reflow pairs", unit="pair",
                   enabled=show)
    for c in todo:
        z, x = draw_pairs(teacher, range(c, min(n, c + CHUNK)), seed, sampler)
        atomic_save_file(_chunk(folder, c), {"z": z, "x": x.contiguous()},
                         {"teacher_sampler": " ".join(map(str, sampler))})
        bar.update(len(z))
    bar.close()


class Pairs:
    """The run's reflow pairs (drawn by :func:`draw_missing`) and the per-step batches of them."""

    def __init__(self, cfg, run_dir: Path):
        from safetensors.torch import load_file

        self.cfg, folder = cfg, Path(run_dir) / PAIRS_DIR
        parts = [load_file(_chunk(folder, c)) for c in range(0, cfg.fewstep.pairs, CHUNK)]
        self.z = torch.cat([p["z"] for p in parts])
        self.x = torch.cat([p["x"] for p in parts])

    def batch(self, step: int, sl: slice, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, noise) of step ``step``'s global batch, sliced: pairs drawn with replacement from a generator
        seeded by (training.seed, step), apart from the step's other draws."""
        g = torch.Generator().manual_seed(image_seed(self.cfg.training.seed, 2**41 + step))
        idx = torch.randint(len(self.z), (self.cfg.training.batch_size,), generator=g)[sl]
        return self.x[idx].to(device), self.z[idx].to(device)


def shared_pairs(cfg, run_dir: Path, teacher, dist, *, show: bool = True) -> Pairs:
    """The pairs every process trains on: drawn by the main process only, read by all after a barrier."""
    if dist.main:
        draw_missing(cfg, run_dir, teacher, show=show)
    dist.barrier()
    return Pairs(cfg, run_dir)


def same_shapes(ours: dict, theirs: dict, cfg, teacher_name: str) -> bool:
    """Whether two networks' weights (state dicts) have the same names and shapes; with fewstep.init=teacher a
    mismatch is refused in one line instead."""
    same = ours.keys() == theirs.keys() and all(ours[k].shape == theirs[k].shape for k in ours)
    if cfg.fewstep.init == "teacher" and not same:
        from ..errors import ScorekitError

        raise ScorekitError(f"fewstep.init=teacher: the student's network differs in shape from {teacher_name}'s; "
                            "use fewstep.init=scratch or the teacher's model settings")
    return same


def starts_from_teacher(cfg, teacher, student_net) -> bool:
    """Whether a reflow student starts from its teacher's weights (fewstep.init): ``teacher`` / ``scratch`` as told;
    ``auto``: when the networks have the same shapes and the teacher learnt data in [-1, 1] like the student (a VE
    teacher's network, trained on [0, 1] with another time input, measured a worse start than none: README)."""
    same = same_shapes(student_net.state_dict(), teacher.net.state_dict(), cfg, teacher.config.name)
    if cfg.fewstep.init == "auto":
        return same and tuple(teacher.data_range) == (-1.0, 1.0)
    return cfg.fewstep.init == "teacher"


def euler_grids(cfg, steps=(1, 2, 4)) -> dict[int, list[float]]:
    """The student's Euler steps, uniform in t from the top level to 0 (the rectified-flow papers' sampler), as
    sigmas = t / (1 - t): scorekit sample DIR --steps K (schedule auto) uses them."""
    from ..model.factory import build_process

    top = float(build_process(cfg).taus[-1])
    grids = {}
    for k in steps:
        tau = torch.linspace(top, 0.0, k + 1, dtype=torch.float64)
        grids[k] = (tau / (1 - tau)).tolist()
    return grids
