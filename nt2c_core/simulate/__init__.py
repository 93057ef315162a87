"""Physics simulation of cryo-EM micrographs from atomic models (see ``micrograph`` for the model)."""

from .dataset import DatasetSummary, resolve_device, simulate_dataset
from .micrograph import MicrographSimulator, SimulatedMicrograph, SimulationConfig
from .optics import Acquisition, ctf, interaction_constant, wavelength
from .structure import Structure, load_structure

__all__ = [
    "Acquisition",
    "DatasetSummary",
    "MicrographSimulator",
    "SimulatedMicrograph",
    "SimulationConfig",
    "Structure",
    "ctf",
    "interaction_constant",
    "load_structure",
    "resolve_device",
    "simulate_dataset",
    "wavelength",
]
