"""scorekit: score-based generative models of images (DDPM and NCSN/NCSNv2).

The names the README's Python section uses live here: ``build`` (a fresh denoiser from a preset),
``load`` (a run's denoiser with its EMA weights), ``generate`` (uint8 samples by seed), ``conditional`` (a
class-conditional or guided denoiser), ``train_run``, ``ImageRNG`` (per-image random streams), ``Denoiser`` and
the configuration helpers. The packages: ``config``, ``model``, ``processes``, ``nets``, ``samplers``,
``evaluation``, ``metrics``, ``training``, ``data`` and the applications above them (``codec``, ``ema``,
``studies``, ``hype``, ``interop``, ``cli``).
"""

import sys as _sys

from . import evaluation
from .config import Config, ConfigError, load_config
from .evaluation import generate, likelihood, quality
from .model import Denoiser, Output, Variance, build, conditional, denoiser, factory, guidance, precond
from .rng import ImageRNG
from .run import load
from .training import train_run

__version__ = "0.1.0"

# Import paths from before the model and evaluation packages (2026-12) still resolve.
for _old, _new in {"denoiser": denoiser, "factory": factory, "guidance": guidance, "precond": precond,
                   "evaluate": evaluation, "likelihood": likelihood, "quality": quality}.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _new)
    globals().setdefault(_old, _new)

__all__ = ["build", "load", "generate", "conditional", "train_run", "Config", "ConfigError", "load_config",
           "Denoiser", "Output", "Variance", "ImageRNG"]
