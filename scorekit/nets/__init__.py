"""Networks: they map (input, noise label) to an output and know nothing of noise processes."""

from .unet import UNET_CONFIGS, UNet

__all__ = ["UNet", "UNET_CONFIGS"]
