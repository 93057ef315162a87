"""NT2C protocols (Scipion discovers them through this module)."""

from .protocol_denoise import ProtNT2CDenoise
from .protocol_import_model import ProtNT2CImportModel
from .protocol_nt2c import ProtNT2C

__all__ = ["ProtNT2C", "ProtNT2CDenoise", "ProtNT2CImportModel"]
