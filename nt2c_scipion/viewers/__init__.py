"""NT2C viewers (Scipion discovers them through this module)."""

from .viewer_denoise import NT2CDenoiseViewer
from .viewer_particles import NT2CRestorerTrainingViewer, NT2CRestoreViewer
from .viewer_training import NT2CStageViewer, NT2CTrainingViewer

__all__ = [
    "NT2CDenoiseViewer",
    "NT2CRestorerTrainingViewer",
    "NT2CRestoreViewer",
    "NT2CStageViewer",
    "NT2CTrainingViewer",
]

from ..protocols import HAVE_TOMO  # noqa: E402

if HAVE_TOMO:
    from .viewer_tomo import NT2CTomoViewer  # noqa: F401

    __all__ += ["NT2CTomoViewer"]
