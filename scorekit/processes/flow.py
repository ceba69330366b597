"""The straight path of flow matching and rectified flow (Lipman et al. 2022; Liu, Gong & Liu 2022; SD3, Esser et
al. 2024), in SD3's orientation: tau in [0, 1], tau = 0 the data, tau = 1 the noise,

    x_tau = (1 - tau) x0 + tau eps,        velocity v = dx_tau / dtau = eps - x0,

one more Gaussian path (a = 1 - tau, s = tau; sigma = tau / (1 - tau) in EDM's sigma-space), so every sampler,
likelihood and wrapper of the other processes applies unchanged.

The process has N levels at tau_i = (i + 1) / (N + 1) (i = 0..N-1: tau from about 1/N to 1 - 1/N, so sigma from
about 1/N to N), linked as the Gaussian Markov chain with these marginals (for the ancestral and predictor-corrector
samplers). Between levels tau (not log sigma) is interpolated linearly, so a fractional level is an exact point of
the continuous path: training draws tau from [tau_0, tau_{N-1}] and the network reads 1000 tau (the timestep of
diffusers' flow-matching schedulers and SD3). The prior is N(0, I) in x-space, the flow's tau = 1.
"""

from __future__ import annotations

import math

import torch

from .base import DiscreteProcess
from .subvp import chain_tables

LABEL_SCALE = 1000.0  # the network's time input is 1000 tau


class FlowProcess(DiscreteProcess):
    """The linear path x = (1 - tau) x0 + tau eps on increasing levels ``taus`` in (0, 1)."""

    kind = "flow"
    prior_std = 1.0

    def __init__(self, taus: torch.Tensor):
        taus = torch.as_tensor(taus, dtype=torch.float64).cpu()
        if taus.ndim != 1 or not bool(torch.all((taus > 0) & (taus < 1))):
            raise ValueError("flow levels tau must be a 1-d sequence in (0, 1)")
        self.taus = taus
        a, s = 1.0 - taus, taus
        super().__init__(a=a, s=s, **chain_tables(a, s))
        alpha = a / torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]])
        self.reverse_scale = 2.0 - alpha  # the generic chain's discretised reverse SDE, as for sub-VP
        self.corrector_alpha = alpha * alpha

    @classmethod
    def from_levels(cls, num_levels: int = 1000) -> FlowProcess:
        """N levels tau_i = (i + 1) / (N + 1)."""
        if num_levels < 1:
            raise ValueError(f"a flow needs at least one level, got {num_levels}")
        return cls(torch.arange(1, num_levels + 1, dtype=torch.float64) / (num_levels + 1))

    # ----- tau, sigma and the level index ------------------------------------------------------------

    def tau(self, t: torch.Tensor) -> torch.Tensor:
        """tau at integer or fractional level t (linear between levels)."""
        return self._interp(self.taus, t)

    def t_of_tau(self, tau: torch.Tensor | float) -> torch.Tensor:
        """The fractional level of ``tau`` (inverse of :meth:`tau`, clamped to the levels' range)."""
        return self._locate(self.taus, torch.as_tensor(tau, dtype=self.taus.dtype, device=self.device))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(t):
            return self.sigmas[t.long().to(self.device)]
        tau = self.tau(t)
        return tau / (1.0 - tau)

    def t_of_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=self.taus.dtype, device=self.device)
        return self.t_of_tau(sigma / (1.0 + sigma))

    def scale_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """a = 1 - tau = 1 / (1 + sigma)."""
        return 1.0 / (1.0 + sigma)

    def prior_var_hat(self, sigma: float) -> float:
        """The prior N(0, I) of x_tau seen in sigma-space: x_hat = x / a has variance (1 + sigma)^2."""
        return (1.0 + sigma) ** 2

    def net_label(self, t: torch.Tensor) -> torch.Tensor:
        return LABEL_SCALE * self.tau(t)

    def t_of_label(self, label: torch.Tensor) -> torch.Tensor:
        return self.t_of_tau(label.double() / LABEL_SCALE)

    def subset(self, timesteps: torch.Tensor) -> FlowProcess:
        return FlowProcess(self.taus.cpu()[torch.as_tensor(timesteps).long().cpu()])


def logit_normal_tau(n: int, generator: torch.Generator, device, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    """SD3's logit-normal time sampling (Esser et al. 2024, Sec. 3.1): tau = sigmoid(u), u ~ N(m, s^2) (float64)."""
    return torch.sigmoid(m + s * torch.randn(n, generator=generator, device=device, dtype=torch.float64))


def logit_normal_density(tau: torch.Tensor, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    """The density of :func:`logit_normal_tau`: N(logit tau; m, s^2) / (tau (1 - tau))."""
    u = torch.log(tau) - torch.log1p(-tau)
    return torch.exp(-0.5 * ((u - m) / s) ** 2) / (s * math.sqrt(2 * math.pi) * tau * (1 - tau))


U_SHAPE = 4.0  # 2-rectified flow++'s a


def u_shaped_tau(n: int, generator: torch.Generator, device, a: float = U_SHAPE) -> torch.Tensor:
    """2-rectified flow++'s U-shaped times (Lee, Lin & Fanti 2024, Sec. 3.1): density proportional to
    exp(a t) + exp(a (1 - t)), i.e. cosh(a (t - 1/2)), on [0, 1], by inverting its CDF
    F(t) = (sinh(a (t - 1/2)) + sinh(a / 2)) / (2 sinh(a / 2)) (float64)."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    half = math.sinh(a / 2)
    return 0.5 + torch.asinh((2 * u - 1) * half) / a


def u_shaped_density(tau: torch.Tensor, a: float = U_SHAPE) -> torch.Tensor:
    """The density of :func:`u_shaped_tau`: a cosh(a (t - 1/2)) / (2 sinh(a / 2))."""
    return a * torch.cosh(a * (tau - 0.5)) / (2 * math.sinh(a / 2))


def mode_tau(n: int, generator: torch.Generator, device, scale: float = 1.29) -> torch.Tensor:
    """SD3's "mode" sampling with heavy tails (Sec. 3.1, Eq. 20): tau = 1 - u - scale (cos^2(pi u / 2) - 1 + u),
    u uniform; scale > 0 puts more weight on the middle, scale < 0 on the ends (float64)."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return 1.0 - u - scale * (torch.cos(math.pi * u / 2) ** 2 - 1.0 + u)
