"""VDM's objective (Kingma, Salimans, Poole & Ho 2021): the negative variational bound of a diffusion model with a
noise schedule gamma(t) = -log SNR(t), per image in bits/dim,

    -ELBO = L_prior + L_recon + L_diffusion,
    L_prior     = KL(q(z_1 | x) || N(0, I))                                   (Eq. 9: the prior term)
    L_recon     = -E log p(x | z_0), p(x | z_0) = prod_i p(x_i | z_0,i), p(x_i = v | z_0,i) oc N(z_0,i; alpha_0 v,
                  sigma_0^2) over the data's values v (the decoder of Appendix E on the run's value set)
    L_diffusion = 1/2 E_{t ~ U(0, 1)} [gamma'(t) ||eps - eps_hat(z_t; t)||^2]   (continuous time, Eq. 17), or
                = T'/2 E_{i ~ U{1..T'}} [(exp(gamma(t_i) - gamma(t_{i-1})) - 1) ||eps - eps_hat(z_{t_i}; t_i)||^2]
                  with t_i = i / T' (discrete time, T' steps; Eq. 15 in eps form).

The times of a batch are low-discrepancy (t_b = (u + b / B) mod 1, Appendix I.1). A learned schedule's endpoints
gamma(0), gamma(1) take the bound's gradient; its shape takes the gradient of the bound's second moment instead,
E[2 L dL/d eta] (Appendix I.2: the bound does not depend on the shape in continuous time, its variance does).
"""

from __future__ import annotations

import math

import torch

from ..evaluation.likelihood import data_values
from ..images import value_edges
from ..processes.vdm import TableGamma


def schedule_of(denoiser) -> torch.nn.Module:
    """The run's gamma: the network's learned schedule, else the process's table."""
    gamma = getattr(denoiser.net, "gamma", None)
    return gamma if gamma is not None else TableGamma(denoiser.process).to(denoiser.device)


def low_discrepancy(u: torch.Tensor, n: int) -> torch.Tensor:
    """(u + b / n) mod 1 for b = 0..n-1 (one uniform draw u)."""
    return torch.remainder(u + torch.arange(n, dtype=torch.float64, device=u.device) / n, 1.0)


def _values_in_range(denoiser) -> torch.Tensor:
    v = data_values(denoiser)
    return value_edges(torch.arange(256) if v is None else v, denoiser.data_range)[0]


def recon_nats(denoiser, x0: torch.Tensor, gamma_0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-log p(x | z_0) per image (nats), z_0 = alpha_0 x + sigma_0 eps, VDM's decoder on the data's values."""
    a2 = torch.sigmoid(-gamma_0)
    a, s = a2.sqrt(), torch.sigmoid(gamma_0).sqrt()
    z = a * x0 + s * eps
    v = _values_in_range(denoiser).to(x0.device, x0.dtype)
    logits = -0.5 * ((z[..., None] - a * v) / s) ** 2
    k = (x0[..., None] - v).abs().argmin(-1, keepdim=True)  # the value each pixel holds
    logp = torch.log_softmax(logits, -1).gather(-1, k).squeeze(-1)
    return -logp.flatten(1).sum(1)


def prior_nats(x0: torch.Tensor, gamma_1: torch.Tensor) -> torch.Tensor:
    """KL(N(alpha_1 x, sigma_1^2) || N(0, 1)) summed over dimensions, per image (nats)."""
    a2, s2 = torch.sigmoid(-gamma_1), torch.sigmoid(gamma_1)
    return 0.5 * (s2 + a2 * x0**2 - 1 - torch.log(s2)).flatten(1).sum(1)


def diffusion_nats(denoiser, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, steps: int = 0,
                   y: torch.Tensor | None = None, aug: torch.Tensor | None = None,
                   gamma: torch.nn.Module | None = None) -> tuple[torch.Tensor, tuple]:
    """L_diffusion per image (nats) at times ``t`` in [0, 1] (``steps`` = T' > 0: discrete time, t rounded up to
    the grid i / T'), and the learned schedule's shape tensors (empty for a fixed schedule). ``gamma``: the
    schedule (:func:`schedule_of` by default)."""
    gamma = schedule_of(denoiser) if gamma is None else gamma
    T = denoiser.process.num_levels
    t = t.to(x0.device, torch.float64)
    if steps:
        t = torch.ceil(t * steps).clamp(min=1) / steps
    t = t.to(x0.dtype)
    g_t, dg, shape = gamma.value_and_slope(t)
    if steps:  # both ends of the step carry the schedule's shape, so both take its variance gradient
        g_s, _, shape_s = gamma.value_and_slope(t - 1.0 / steps)
        weight, shape = 0.5 * steps * torch.expm1(g_t - g_s), (*shape, *shape_s)
    else:
        weight = 0.5 * dg
    a = torch.sigmoid(-g_t).sqrt().reshape(-1, *[1] * (x0.ndim - 1))
    s = torch.sigmoid(g_t).sqrt().reshape(-1, *[1] * (x0.ndim - 1))
    eps_hat = denoiser(a * x0 + s * eps, t.double() * (T - 1), y=y, aug=aug).eps.to(x0.dtype)
    return weight * ((eps - eps_hat) ** 2).flatten(1).sum(1), shape


def vdm_loss(denoiser, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, steps: int = 0,
             y: torch.Tensor | None = None, aug: torch.Tensor | None = None, *,
             variance_gradient: bool = True) -> torch.Tensor:
    """-ELBO per image in bits/dim at times ``t`` in [0, 1] (the module docstring); ``steps`` = T' > 0: the
    discrete-time diffusion term (t rounded up to the grid i / T'). The network sees level t (T - 1). The decoder's
    z_0 reuses the diffusion term's eps (each term stays unbiased)."""
    gamma = schedule_of(denoiser)
    diffusion, shape = diffusion_nats(denoiser, x0, t, eps, steps, y, aug, gamma)
    ends = gamma(torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device))
    nats = diffusion + recon_nats(denoiser, x0, ends[0], eps) + prior_nats(x0, ends[1])
    bpd = nats / (x0[0].numel() * math.log(2.0))
    if shape and variance_gradient and torch.is_grad_enabled():  # the shape learns E[L^2]: d E[L^2] = E[2 L dL]
        scale = 2 * bpd.detach()
        for tensor in shape:
            if tensor.requires_grad:
                tensor.register_hook(lambda grad: grad * scale)
    return bpd
