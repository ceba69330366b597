"""scorekit: score-based generative models of images (DDPM and NCSN/NCSNv2)."""

from .config import Config, ConfigError, load_config
from .denoiser import Denoiser, Output, Variance
from .factory import build
from .rng import ImageRNG

__version__ = "0.1.0"

__all__ = ["build", "Config", "ConfigError", "load_config", "Denoiser", "Output", "Variance", "ImageRNG"]
