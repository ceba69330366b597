"""Power-function EMA and post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics
of Diffusion Models", EDM2, Sec. 3 and App. C).

A power-function EMA after t updates averages the weights theta_1..theta_t with the profile
p(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t]: the update is ema <- beta_t ema + (1 - beta_t) theta_t
with beta_t = (1 - 1/t)^(gamma + 1) (Eq. 3), so theta_tau gets exactly the integral of p over [tau - 1, tau].
Its width relative to the training length is sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))).

Snapshots of two such EMAs saved during training are enough to reconstruct the EMA of any other profile
afterwards: the profiles' inner products have closed forms, and least squares picks the combination of
snapshots whose profile is closest (in L2) to the target's (App. C.2).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from ..checkpoint import atomic_save_file
from ..errors import CheckpointError

_SNAP = re.compile(r"^phema_(\d+)\.safetensors$")


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of relative width sigma_rel: the largest real root of
    gamma^3 + 7 gamma^2 + (16 - 1/sigma_rel^2) gamma + 12 - 1/sigma_rel^2 (EDM2 Eq. 2 solved for gamma)."""
    if not 0 < sigma_rel < 0.28:
        raise ValueError(f"sigma_rel must be in (0, 0.28), got {sigma_rel}")
    t = sigma_rel ** -2
    return float(np.roots([1.0, 7.0, 16.0 - t, 12.0 - t]).real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    return float(np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))))


def profile(t: float, gamma: float, tau: np.ndarray) -> np.ndarray:
    """The averaging profile p(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t], 0 after t."""
    tau = np.asarray(tau, dtype=np.float64)
    inside = (tau >= 0) & (tau <= t)
    return np.where(inside, (gamma + 1) * np.clip(tau, 0, None) ** gamma / t ** (gamma + 1), 0.0)


def profile_dot(t_a, g_a, t_b, g_b) -> np.ndarray:
    """Closed form of the L2 inner product of two profiles, broadcast over arrays:
    (g_a + 1)(g_b + 1) min(t_a, t_b)^(g_a + g_b + 1) / ((g_a + g_b + 1) t_a^(g_a + 1) t_b^(g_b + 1))."""
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, g_a, t_b, g_b))
    m = np.minimum(t_a, t_b)
    # written with ratios to stay finite for large t and gamma
    return (g_a + 1) * (g_b + 1) / (g_a + g_b + 1) / m * (m / t_a) ** (g_a + 1) * (m / t_b) ** (g_b + 1)


def posthoc_weights(steps, gammas, t_target: float, gamma_target: float) -> np.ndarray:
    """Least-squares coefficients x with sum_i x_i p_i closest to the target profile (EDM2 App. C.2)."""
    steps, gammas = np.asarray(steps, np.float64), np.asarray(gammas, np.float64)
    A = profile_dot(steps[:, None], gammas[:, None], steps[None, :], gammas[None, :])
    b = profile_dot(steps, gammas, t_target, gamma_target)
    return np.linalg.lstsq(A, b, rcond=None)[0]


class PowerEMA:
    """A power-function EMA of a network's weights (buffers are copied); ``module`` is a frozen copy."""

    def __init__(self, net: nn.Module, sigma_rel: float):
        self.sigma_rel, self.gamma = float(sigma_rel), sigma_rel_to_gamma(sigma_rel)
        self.module = copy.deepcopy(net).eval().requires_grad_(False)
        self._params = list(self.module.parameters())

    @torch.no_grad()
    def update(self, net: nn.Module, t: int) -> None:
        """The t-th update (t = 1, 2, ...): beta_t = (1 - 1/t)^(gamma + 1); the first copies the weights."""
        beta = (1.0 - 1.0 / t) ** (self.gamma + 1)
        torch._foreach_lerp_(self._params, [p.detach() for p in net.parameters()], 1.0 - beta)
        for b_ema, b in zip(self.module.buffers(), net.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


def save_snapshot(folder: Path, step: int, emas: list[PowerEMA]) -> Path:
    """RUN/checkpoints/phema/phema_<step>.safetensors: the EMAs' weights (``<i>.<name>``) and, in the metadata,
    the step, sigma_rel and gamma of each; written atomically (temporary file, fsync, rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"{i}.{k}": v.detach().to("cpu").contiguous().clone() for i, e in enumerate(emas)
               for k, v in e.state_dict().items()}
    meta = {"step": int(step), "sigma_rel": [e.sigma_rel for e in emas], "gamma": [e.gamma for e in emas]}
    return atomic_save_file(folder / f"phema_{step:09d}.safetensors", tensors, {"scorekit_phema": json.dumps(meta)})


def list_snapshots(folder: Path, up_to: int | None = None) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SNAP.match(p.name)))
    return [(s, p) for s, p in found if up_to is None or s <= up_to]


def load_snapshot(path: Path, index: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights of the ``index``-th EMA in one snapshot file, and the file's metadata."""
    meta = _snapshot_meta(path)
    with safe_open(str(path), framework="pt") as f:
        state = {k.split(".", 1)[1]: f.get_tensor(k) for k in f.keys() if k.split(".", 1)[0] == str(index)}
    return state, meta


def _snapshot_meta(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["scorekit_phema"])
    except Exception as e:  # noqa: BLE001 - any unreadable snapshot is reported the same way
        raise CheckpointError(f"{path}: unreadable post-hoc EMA snapshot ({e})") from None


def reconstruct(folder: Path, sigma_rel: float, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The EMA of width ``sigma_rel`` at ``step`` (default: the last snapshot) from the snapshots in ``folder``;
    returns the weights and a description (the snapshots used and their coefficients)."""
    snaps = list_snapshots(folder, step)
    if not snaps:
        raise CheckpointError(f"{folder}: no post-hoc EMA snapshots (train with training.snapshot_every > 0)")
    t_target = step if step is not None else snaps[-1][0]
    gamma_target = sigma_rel_to_gamma(sigma_rel)
    entries = []  # (step, gamma, path, index)
    for s, path in snaps:
        meta = _snapshot_meta(path)
        entries += [(s, g, path, i) for i, g in enumerate(meta["gamma"])]
    x = posthoc_weights([e[0] for e in entries], [e[1] for e in entries], t_target, gamma_target)
    out: dict[str, torch.Tensor] = {}
    for (_, _, path, i), w in zip(entries, x):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                idx, name = key.split(".", 1)
                if int(idx) != i:
                    continue
                v = f.get_tensor(key)
                if not v.is_floating_point():  # integer buffers: the latest snapshot's
                    out[name] = v
                    continue
                acc = out.get(name)
                out[name] = v.double() * w if acc is None else acc + v.double() * w
    out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}  # the weights are float32
    info = {"sigma_rel": sigma_rel, "gamma": gamma_target, "step": t_target, "snapshots": len(snaps),
            "coefficients": [{"step": e[0], "gamma": e[1], "weight": float(w)} for e, w in zip(entries, x)]}
    return out, info

