"""MeanFlow's average velocity (Geng, Deng, Bai, Kolter & He 2025, arXiv 2505.13447).

On the straight path x_tau = (1 - tau) x0 + tau eps (tau = 0 data, 1 noise), the average velocity between r <= t is
u(z_t, r, t) = 1 / (t - r) * int_r^t v(z_s, s) ds, so one jump z_r = z_t - (t - r) u(z_t, r, t) lands on the ODE's
point at r, and u(z, t, t) = v(z, t). A MeanFlow network (a U-Net built with ``mean_flow``) reads (t, t - r) through
two time embeddings; its plain call (gap 0) is the instantaneous velocity, so every sampler of a flow runs on it.
"""

from __future__ import annotations

import torch

from ..processes.flow import LABEL_SCALE
from .denoiser import Denoiser


def is_mean_flow(denoiser: Denoiser) -> bool:
    """The denoiser's network reads a time gap t - r (MeanFlow)."""
    return bool(getattr(denoiser.net, "mean_flow", False))


def mean_flow_call(net, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """A MeanFlow U-Net at path times (r, t): its labels 1000 t and 1000 (t - r)."""
    kw = {"gap": LABEL_SCALE * (t - r)}
    return net(z, LABEL_SCALE * t, **kw) if y is None else net(z, LABEL_SCALE * t, y, **kw)


def average_velocity(denoiser: Denoiser, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                     y: torch.Tensor | None = None) -> torch.Tensor:
    """u_theta(z, r, t) at path times 0 <= r <= t <= 1 (per image, or scalars): the network at labels 1000 t and
    1000 (t - r)."""
    if not is_mean_flow(denoiser):
        raise ValueError("the average velocity u(z, r, t) needs a MeanFlow network (model.mean_flow: true)")
    n = z.shape[0]
    t = torch.as_tensor(t, dtype=torch.float32, device=z.device).expand(n)
    r = torch.as_tensor(r, dtype=torch.float32, device=z.device).expand(n)
    if bool((r > t).any()) or bool((r < 0).any()) or bool((t > 1).any()):
        raise ValueError(f"MeanFlow needs path times 0 <= r <= t <= 1, got r in [{float(r.min()):.4g}, "
                         f"{float(r.max()):.4g}], t in [{float(t.min()):.4g}, {float(t.max()):.4g}]")
    denoiser.nfe += 1
    return mean_flow_call(denoiser.net, z, r, t, y)
