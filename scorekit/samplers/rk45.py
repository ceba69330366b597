"""An adaptive Dormand-Prince 5(4) ODE solver whose step size is controlled per sample.

Each row of the batch keeps its own position, step size and error control, so a sample's trajectory
does not depend on the other samples in its batch. Used by the probability-flow ODE sampler and by the
ODE likelihood.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((),
      (1 / 5,),
      (3 / 40, 9 / 40),
      (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip((*_A[6], 0.0), _B4))


def dopri5(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], y0: torch.Tensor, u0: float, u1: float, *,
           rtol: float = 1e-5, atol: float = 1e-5, first_step: float | None = None, max_steps: int = 10_000
           ) -> tuple[torch.Tensor, int]:
    """Integrate dy/du = f(y, u) from u0 to u1 for every row of y0 (B, ...); f receives the per-row u (B,).
    Returns y(u1) and the number of evaluations of f."""
    B = y0.shape[0]
    shape = (B,) + (1,) * (y0.ndim - 1)
    direction = 1.0 if u1 >= u0 else -1.0
    span = abs(u1 - u0)
    u = torch.full((B,), float(u0), dtype=torch.float64, device=y0.device)
    h = torch.full((B,), (first_step or 0.02 * span) * direction, dtype=torch.float64, device=y0.device)
    y = y0
    k1 = f(y, u)
    nfe = 1
    done = torch.zeros(B, dtype=torch.bool, device=y0.device)
    for _ in range(max_steps):
        if bool(done.all()):
            return y, nfe
        remaining = (u1 - u) * direction
        h = torch.where(done, torch.zeros_like(h), direction * torch.minimum(h.abs(), remaining))
        hb = h.reshape(shape).to(y.dtype)
        ks = [k1]
        for i in range(1, 7):
            yi = y + hb * sum(a * k for a, k in zip(_A[i], ks) if a != 0.0)
            ks.append(f(yi, u + _C[i] * h))
        nfe += 6
        y5 = y + hb * sum(b * k for b, k in zip(_A[6], ks[:6]) if b != 0.0)
        err = hb * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        scale = atol + rtol * torch.maximum(y.abs(), y5.abs())
        err_norm = (err / scale).pow(2).flatten(1).mean(1).sqrt().double()
        accept = (err_norm <= 1.0) & ~done
        acc = accept.reshape(shape)
        y = torch.where(acc, y5, y)
        k1 = torch.where(acc, ks[6], k1)  # first same as last
        u = torch.where(accept, u + h, u)
        done = done | (accept & ((u1 - u) * direction <= 1e-12 * max(span, 1.0)))
        factor = (0.9 * err_norm.clamp_min(1e-10) ** -0.2).clamp(0.2, 10.0)
        h = h * torch.where(accept, factor, factor.clamp(max=1.0))
    raise RuntimeError(f"dopri5 did not reach u = {u1} in {max_steps} steps (tolerances too tight?)")
