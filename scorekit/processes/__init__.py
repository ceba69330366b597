"""Noise processes: DDPM's VP, NCSN's VE and the sub-VP process, discrete and continuous."""

from .base import DiscreteProcess, expand_like, normal_kl
from .flow import FlowProcess
from .subvp import SubVPProcess, SubVPSDE
from .ve import LADDERS, VESDE, VEProcess, sigma_ladder
from .vp import SCHEDULES, VPSDE, VPProcess, beta_schedule

__all__ = ["DiscreteProcess", "expand_like", "normal_kl", "VPProcess", "VPSDE", "beta_schedule", "SCHEDULES",
           "VEProcess", "VESDE", "sigma_ladder", "LADDERS", "SubVPProcess", "SubVPSDE",
           "FlowProcess"]
