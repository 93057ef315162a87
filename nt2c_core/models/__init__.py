"""Networks (``unet``: the denoiser, ``gan``: the noise generator and critic), the registry of
buildable architectures (``registry``, torch-free) and the NT2C model file format (``store``).

Attributes load lazily, so ``nt2c_core.models.registry`` is importable without torch.
"""

__all__ = ["ModelFileError", "UNet", "load_model", "save_model"]


def __getattr__(name):
    if name in ("ModelFileError", "load_model", "save_model"):
        from . import store

        return getattr(store, name)
    if name == "UNet":
        from .unet import UNet

        return UNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
