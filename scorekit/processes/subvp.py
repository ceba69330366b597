"""The sub-VP process (Song et al. 2021, arXiv 2011.13456, Eq. 29), discrete and continuous.

Its marginals are q(x_t | x0) = N(sqrt(alphabar_t) x0, (1 - alphabar_t)^2 I): the VP process's mean with a
smaller variance, so that sigma_t = (1 - alphabar_t) / sqrt(alphabar_t). The discrete chain between levels is
the Gaussian Markov chain with these marginals (the general posterior of Kingma et al. 2021, Eq. 32-33).
"""

from __future__ import annotations

import torch

from .base import DiscreteProcess
from .vp import beta_schedule


def chain_tables(a: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
    """Posterior and step tables of the Markov chain with marginals N(a_t x0, s_t^2 I), level -1 being the data:
    alpha = a_t / a_{t-1}, step variance s_t^2 - alpha^2 s_{t-1}^2, q(x_{t-1} | x_t, x0) = N(c1 x0 + c2 x_t, v)
    with c1 = a_{t-1} step / s_t^2, c2 = alpha s_{t-1}^2 / s_t^2, v = step s_{t-1}^2 / s_t^2 (float64)."""
    a_prev = torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]])
    s_prev = torch.cat([torch.zeros(1, dtype=s.dtype), s[:-1]])
    alpha = a / a_prev
    step = s * s - alpha * alpha * s_prev * s_prev
    return dict(posterior_mean_coef1=a_prev * step / (s * s), posterior_mean_coef2=alpha * s_prev**2 / (s * s),
                posterior_variance=step * s_prev**2 / (s * s), step_variance=step)


class SubVPProcess(DiscreteProcess):
    """Discrete sub-VP process on a beta schedule: a_t = sqrt(alphabar_t), s_t = 1 - alphabar_t."""

    kind = "subvp"
    prior_std = 1.0
    prior_data_variance = 1.0  # the prior N(0, I) of x_T, as for VP (a_T^2 + s_T^2 = 1 - alphabar_T + ...)

    def __init__(self, alphas_cumprod: torch.Tensor):
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if ab.ndim != 1 or not bool(torch.all((ab > 0) & (ab < 1))):
            raise ValueError("alphas_cumprod must be a 1-d sequence in (0, 1)")
        self.alphas_cumprod = ab
        a, s = ab.sqrt(), 1.0 - ab
        super().__init__(a=a, s=s, **chain_tables(a, s))
        alpha = a / torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]])
        self.reverse_scale = 2.0 - alpha
        self.corrector_alpha = alpha * alpha

    @classmethod
    def from_schedule(cls, name: str = "linear", T: int = 1000, beta_start: float = 1e-4,
                      beta_end: float = 0.02) -> SubVPProcess:
        return cls(torch.cumprod(1.0 - beta_schedule(name, T, beta_start, beta_end), 0))

    def scale_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """a from sigma = (1 - a^2) / a: a = 2 / (sigma + sqrt(sigma^2 + 4))."""
        return 2.0 / (sigma + (sigma * sigma + 4.0).sqrt())

    def subset(self, timesteps: torch.Tensor) -> SubVPProcess:
        return SubVPProcess(self.alphas_cumprod.cpu()[torch.as_tensor(timesteps).long().cpu()])


class SubVPSDE:
    """dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw, beta linear on t in [0, 1]."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        """int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(t), s(t)) = (exp(-1/2 int beta), 1 - exp(-int beta))."""
        b = self.integral(t)
        return (-0.5 * b).exp(), -torch.expm1(-b)

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        g2 = beta * -torch.expm1(-2.0 * self.integral(t))
        return -0.5 * beta.reshape(-1, *([1] * (x.ndim - 1))) * x, g2.sqrt()
