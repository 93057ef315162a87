"""What the microscope did (:class:`Acquisition`) and the electron-optics constants that follow
from it. Torch-free: the CLI's argument parsing and the Scipion forms use it without loading the
simulator (:mod:`nt2c_core.simulate.optics` has the CTF).

Units: voltage in V (functions) or kV (:class:`Acquisition`), lengths in Å.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import InputError

DETECTORS = ("K3", "K2", "Falcon4", "ideal")  # detector models of nt2c_core.simulate.detector (first = default)

ELECTRON_REST_ENERGY_EV = 510998.95  # m0 c^2 [eV]


def wavelength(voltage: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in V."""
    return 12.2643 / math.sqrt(voltage * (1.0 + 0.978476e-6 * voltage))


def interaction_constant(voltage: float) -> float:
    """Interaction constant sigma in rad/(V Å): phase = sigma * projected potential [V Å]."""
    lam = wavelength(voltage)
    e0 = ELECTRON_REST_ENERGY_EV
    return (2.0 * math.pi / (lam * voltage)) * (e0 + voltage) / (2.0 * e0 + voltage)


@dataclass
class Acquisition:
    """What the microscope did: the parameters a simulation must share with the experiment.

    voltage_kv: accelerating voltage [kV]; cs_mm: spherical aberration [mm];
    amplitude_contrast: fraction (0-1); pixel_size: [Å/px]; phase_shift_deg: phase-plate shift [deg];
    dose: total exposure [e/Å^2]; b_factor: image B-factor [Å^2] applied to every atom;
    focal_spread: temporal-coherence defocus spread [Å]; illumination_mrad: beam convergence
    half-angle [mrad]; detector: name in :data:`DETECTORS`;
    image_filter: beta of a Gaussian fall-off exp(-beta f^2) (f in cycles/px) of the recorded
    image's amplitude, signal and noise alike: the low-pass that detector electronics or
    software binning leave in real micrographs (``nt2c calibrate`` measures it); 0 = none.
    """

    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    pixel_size: float = 1.0
    phase_shift_deg: float = 0.0
    dose: float = 40.0
    b_factor: float = 40.0
    focal_spread: float = 60.0
    illumination_mrad: float = 0.03
    detector: str = "K3"
    image_filter: float = 0.0

    def validate(self) -> "Acquisition":
        """Raise :class:`InputError` naming the first parameter outside its physical range."""
        _check_range("voltage (kV, --voltage)", self.voltage_kv, 20.0, 1000.0)
        _check_range("Cs (mm, --cs)", self.cs_mm, 0.0, 10.0)
        _check_range("amplitude contrast (--amplitude-contrast)", self.amplitude_contrast, 0.0, 0.5)
        _check_range("pixel size (Å, --pixel-size)", self.pixel_size, 0.1, 20.0)
        _check_range("phase shift (deg, --phase-shift)", self.phase_shift_deg, -180.0, 180.0)
        _check_range("dose (e/Å², --dose)", self.dose, 1e-3, 1000.0)
        _check_range("B-factor (Å², --b-factor)", self.b_factor, 0.0, 1000.0)
        _check_range("focal spread (Å)", self.focal_spread, 0.0, 1000.0)
        _check_range("illumination angle (mrad)", self.illumination_mrad, 0.0, 10.0)
        _check_range("image filter beta", self.image_filter, 0.0, 100.0)
        if self.detector not in DETECTORS:
            raise InputError(f"detector {self.detector!r}: unknown, choose one of {sorted(DETECTORS)}")
        return self

    @property
    def voltage(self) -> float:
        """Accelerating voltage in V."""
        return self.voltage_kv * 1e3

    @property
    def wavelength(self) -> float:
        """Electron wavelength in Å."""
        return wavelength(self.voltage)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} = {value!r}: must be a number")
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(f"{name} = {value}: outside the physical range [{low}, {high}]")
