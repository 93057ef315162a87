"""NT2C viewers (Scipion discovers them through this module)."""

from .viewer_denoise import NT2CDenoiseViewer

__all__ = ["NT2CDenoiseViewer"]
