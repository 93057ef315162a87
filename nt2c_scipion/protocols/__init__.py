"""NT2C protocols (Scipion discovers them through this module)."""

from .protocol_denoise import ProtNT2CDenoise
from .protocol_import_model import ProtNT2CImportModel
from .protocol_noise import ProtNT2CExtractNoise, ProtNT2CTrainNoiseGAN
from .protocol_nt2c import ProtNT2C
from .protocol_simulate import ProtNT2CSimulate
from .protocol_train import ProtNT2CTrainCoarse, ProtNT2CTrainFine

__all__ = ["ProtNT2C", "ProtNT2CDenoise", "ProtNT2CExtractNoise", "ProtNT2CImportModel", "ProtNT2CSimulate",
           "ProtNT2CTrainCoarse", "ProtNT2CTrainFine", "ProtNT2CTrainNoiseGAN"]
