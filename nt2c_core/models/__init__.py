"""Networks (``unet``, later ``gan``) and the NT2C model file format (``store``)."""

from .store import ModelFileError, load_model, save_model
from .unet import UNet

__all__ = ["ModelFileError", "UNet", "load_model", "save_model"]
