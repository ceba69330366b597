"""Noise processes: DDPM's VP and NCSN's VE, discrete and continuous."""

from .base import DiscreteProcess, expand_like, normal_kl
from .ve import LADDERS, VESDE, VEProcess, sigma_ladder
from .vp import SCHEDULES, VPSDE, VPProcess, beta_schedule

__all__ = ["DiscreteProcess", "expand_like", "normal_kl", "VPProcess", "VPSDE", "beta_schedule", "SCHEDULES",
           "VEProcess", "VESDE", "sigma_ladder", "LADDERS"]
