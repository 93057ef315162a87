"""NT2C protocols (Scipion discovers them through this module)."""

from .protocol_denoise import ProtNT2CDenoise
from .protocol_import_model import ProtNT2CImportModel
from .protocol_noise import ProtNT2CExtractNoise, ProtNT2CTrainNoiseGAN
from .protocol_nt2c import ProtNT2C
from .protocol_restore_particles import ProtNT2CRestoreParticles
from .protocol_simulate import ProtNT2CSimulate
from .protocol_train import ProtNT2CTrainCoarse, ProtNT2CTrainFine
from .protocol_train_restorer import ProtNT2CTrainRestorer

try:  # the tomography extra (scipion-em-tomo): its protocols exist only when it imports
    import tomo.objects  # noqa: F401
except ImportError:
    HAVE_TOMO = False
else:
    HAVE_TOMO = True
    from .protocol_denoise_tomo import ProtNT2CDenoiseTomo  # noqa: F401

__all__ = [
    "ProtNT2C",
    "ProtNT2CDenoise",
    "ProtNT2CExtractNoise",
    "ProtNT2CImportModel",
    "ProtNT2CRestoreParticles",
    "ProtNT2CSimulate",
    "ProtNT2CTrainCoarse",
    "ProtNT2CTrainFine",
    "ProtNT2CTrainNoiseGAN",
    "ProtNT2CTrainRestorer",
]
TOMO_PROTOCOLS = ["ProtNT2CDenoiseTomo"]
if HAVE_TOMO:
    __all__ += TOMO_PROTOCOLS
