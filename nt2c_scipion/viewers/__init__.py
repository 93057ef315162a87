"""NT2C viewers (Scipion discovers them through this module)."""

from .viewer_denoise import NT2CDenoiseViewer
from .viewer_training import NT2CStageViewer, NT2CTrainingViewer

__all__ = ["NT2CDenoiseViewer", "NT2CStageViewer", "NT2CTrainingViewer"]
