"""NT2C protocols (Scipion discovers them through this module)."""

from .protocol_denoise import ProtNT2CDenoise
from .protocol_import_model import ProtNT2CImportModel

__all__ = ["ProtNT2CDenoise", "ProtNT2CImportModel"]
