"""DDPM's variance-preserving process (Ho et al. 2020, Eq. 2-7) and the continuous VP-SDE.

Schedules are data: :func:`beta_schedule` returns float64 betas for any name and T, and
:class:`VPProcess` derives every constant from them once, in float64, as the authors' code does
(diffusion_tf/diffusion_utils_2.py). Index t = 0..T-1 is the paper's t = 1..T.
"""

from __future__ import annotations

import math

import torch

from .base import DiscreteProcess

SCHEDULES = ("linear", "quad", "const", "jsd", "warmup10", "warmup50", "cosine")


def _warmup(beta_start: float, beta_end: float, T: int, frac: float) -> torch.Tensor:
    betas = torch.full((T,), beta_end, dtype=torch.float64)
    n = int(T * frac)
    betas[:n] = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    return betas


def _cosine(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM (Nichol & Dhariwal 2021, Eq. 17): alphabar(t) = cos^2(((t/T + s)/(1 + s)) pi/2)."""
    def alphabar(u: torch.Tensor) -> torch.Tensor:
        return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    i = torch.arange(T, dtype=torch.float64)
    return (1 - alphabar((i + 1) / T) / alphabar(i / T)).clamp(max=max_beta)


def beta_schedule(name: str, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """The beta_t of a named schedule, float64, shape (T,) (authors' ``get_beta_schedule`` + cosine)."""
    if T < 1:
        raise ValueError(f"number of timesteps must be >= 1, got {T}")
    if name == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if name == "quad":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if name == "const":
        return torch.full((T,), beta_end, dtype=torch.float64)
    if name == "jsd":  # 1/T, 1/(T-1), ..., 1
        return 1.0 / torch.linspace(T, 1, T, dtype=torch.float64)
    if name == "warmup10":
        return _warmup(beta_start, beta_end, T, 0.1)
    if name == "warmup50":
        return _warmup(beta_start, beta_end, T, 0.5)
    if name == "cosine":
        return _cosine(T)
    raise ValueError(f"unknown beta schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


class VPProcess(DiscreteProcess):
    """Discrete VP process: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)."""

    kind = "vp"
    prior_std = 1.0
    prior_data_variance = 1.0  # x_t ~ N(0, I) means x_t / a ~ N(0, 1 + sigma^2)

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not bool(torch.all((betas > 0) & (betas <= 1))):
            raise ValueError("betas must be a 1-d sequence in (0, 1]")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        ab, ab_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        super().__init__(
            a=ab.sqrt(),
            s=(1.0 - ab).sqrt(),
            # Eq. 7: mu~ = beta_t sqrt(ab_{t-1})/(1 - ab_t) x0 + (1 - ab_{t-1}) sqrt(alpha_t)/(1 - ab_t) x_t
            posterior_mean_coef1=betas * ab_prev.sqrt() / (1.0 - ab),
            posterior_mean_coef2=(1.0 - ab_prev) * self.alphas.sqrt() / (1.0 - ab),
            posterior_variance=betas * (1.0 - ab_prev) / (1.0 - ab),
            step_variance=betas.clone(),
        )
        self.reverse_scale = 2.0 - self.alphas.sqrt()
        self.corrector_alpha = self.alphas.clone()

    @classmethod
    def from_schedule(cls, name: str = "linear", T: int = 1000, beta_start: float = 1e-4,
                      beta_end: float = 0.02) -> VPProcess:
        return cls(beta_schedule(name, T, beta_start, beta_end))

    def scale_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return (1.0 + sigma * sigma).rsqrt()

    def subset(self, timesteps: torch.Tensor) -> VPProcess:
        """Keep alphabar at ``timesteps``: beta'_i = 1 - alphabar_{t_i} / alphabar_{t_(i-1)} (Nichol & Dhariwal)."""
        ab = self.alphas_cumprod.cpu()[torch.as_tensor(timesteps).long().cpu()]
        prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        return VPProcess(1.0 - ab / prev)

    def alphas_cumprod_at(self, t: torch.Tensor) -> torch.Tensor:
        a, _ = self.alpha_s(t)
        return a * a


class VPSDE:
    """Continuous VP-SDE (Song et al. 2021): dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, t in [0, 1].

    beta(t) = beta_min + t (beta_max - beta_min); DDPM's linear schedule with T steps is its
    discretization with beta_min = T * beta_start and beta_max = T * beta_end (0.1 and 20 for T = 1000).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log a(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(t), s(t)) of p_t(x | x0) = N(a x0, s^2 I)."""
        a = self.log_mean_coeff(t).exp()
        return a, (1.0 - a * a).sqrt()

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(drift f(x, t), diffusion g(t))."""
        b = self.beta(t)
        return -0.5 * b.reshape(-1, *([1] * (x.ndim - 1))) * x, b.sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """EDM sigma(t) = s(t)/a(t) = sqrt(exp(-2 log a) - 1)."""
        return torch.expm1(-2 * self.log_mean_coeff(t)).sqrt()
