"""scorekit: score-based generative models of images (DDPM and NCSN/NCSNv2).

The names the README's Python section uses live here: ``build`` (a fresh denoiser from a preset),
``load`` (a run's denoiser with its EMA weights), ``generate`` (uint8 samples by seed), ``train_run``,
``ImageRNG`` (per-image random streams), ``Denoiser`` and the configuration helpers.
"""

from .config import Config, ConfigError, load_config
from .denoiser import Denoiser, Output, Variance
from .evaluate import generate
from .factory import build
from .rng import ImageRNG
from .run import load
from .training import train_run

__version__ = "0.1.0"

__all__ = ["build", "load", "generate", "train_run", "Config", "ConfigError", "load_config", "Denoiser", "Output",
           "Variance", "ImageRNG"]
