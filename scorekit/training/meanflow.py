"""The MeanFlow objective (Geng, Deng, Bai, Kolter & He 2025, arXiv 2505.13447, Eq. 10-11 and Algorithm 1).

The MeanFlow identity u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t), with the total derivative
d/dt u = v d_z u + d_t u, gives the regression target u_tgt = v_t - (t - r) JVP(u_theta; (z_t, r, t) -> (v_t, 0, 1))
with the conditional velocity v_t = eps - x0 as tangent and the target under stop-gradient. The JVP is one forward-mode
pass (``torch.func.jvp``) through the network, so the pairs with r = t (plain flow matching, u = v) skip it. The loss
per image is sg(w) ||u_theta - sg(u_tgt)||^2 with the paper's adaptive weight w = 1 / (||delta||^2 + c)^p (Sec. 4.3).
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..model.meanflow import mean_flow_call
from ..processes.base import expand_like
from ..processes.flow import logit_normal_tau

ADAPTIVE_C = 1e-3  # the paper's c


def draw_times(n: int, g: torch.Generator, device, ratio: float, logit_normal: tuple[float, float] | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """MeanFlow's (t, r): two draws, uniform or logit-normal (m, s), t the larger; with probability 1 - ``ratio``
    r = t (the paper's "ratio of r != t", 25% in its ablation). float64 path times in (0, 1)."""
    if logit_normal is None:
        a, b = (torch.rand(n, generator=g, device=device, dtype=torch.float64) for _ in range(2))
    else:
        a, b = (logit_normal_tau(n, g, device, *logit_normal) for _ in range(2))
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    keep = torch.rand(n, generator=g, device=device, dtype=torch.float64) < ratio
    return t, torch.where(keep, r, t)


def meanflow_target(u_fn, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, v: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(u_theta(z, r, t), sg(u_tgt)): one JVP of ``u_fn(z, r, t)`` along the tangent (v, 0, 1) (Eq. 8, 10). The
    attention runs on PyTorch's math kernel, the one with forward-mode derivatives; on the CPU denormal numbers are
    flushed to zero meanwhile (the math kernel's softmax and its tangent make them; on a shared machine a digits step
    took 19 s with them and about 1 s without)."""
    cpu = z.device.type == "cpu"
    if cpu:
        torch.set_flush_denormal(True)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            u, dudt = torch.func.jvp(u_fn, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    finally:
        if cpu:
            torch.set_flush_denormal(False)
    return u, (v - expand_like(t - r, v) * dudt).detach()


def meanflow_loss(net: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor, r: torch.Tensor, eps: torch.Tensor,
                  power: float = 1.0, y: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image MeanFlow loss at path times r <= t (float, per image) of the MeanFlow U-Net ``net``. On the CPU the
    images are made contiguous: forward mode through channels-last inputs was many times slower there (measured on
    a shared machine, BENCHMARKS.md "MeanFlow")."""
    t, r = t.to(x0.device, x0.dtype), r.to(x0.device, x0.dtype)
    if x0.device.type == "cpu":
        x0, eps = x0.contiguous(), eps.contiguous()
    z = expand_like(1 - t, x0) * x0 + expand_like(t, x0) * eps
    v = eps - x0

    def u_fn(z_, r_, t_, idx):
        return mean_flow_call(net, z_, r_, t_, None if y is None else y[idx])

    u, target = torch.empty_like(x0), torch.empty_like(x0)
    jump = r < t
    for idx, needs_jvp in ((jump.nonzero().flatten(), True), ((~jump).nonzero().flatten(), False)):
        if idx.numel() == 0:
            continue
        if needs_jvp:
            u_i, target_i = meanflow_target(lambda a, b, c, i=idx: u_fn(a, b, c, i), z[idx], r[idx], t[idx], v[idx])
        else:  # r = t: u = v, plain flow matching
            u_i, target_i = u_fn(z[idx], r[idx], t[idx], idx), v[idx]
        u = u.index_put((idx,), u_i.to(u.dtype))
        target = target.index_put((idx,), target_i.to(u.dtype))
    sq = (u - target).pow(2).flatten(1).sum(1)
    return sq / (sq.detach() + ADAPTIVE_C) ** power if power else sq
