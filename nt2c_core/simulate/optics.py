"""Electron optics: wavelength, interaction constant, contrast transfer function, envelopes.

Units: voltage in V (functions) or kV (:class:`Acquisition`), lengths in Å, spatial frequency in
1/Å, angles in rad unless named ``*_deg``. Defocus is positive for underfocus; astigmatism follows
CTFFIND (defocus U/V and the azimuth of U). References: Kirkland (2010); Rohou & Grigorieff (2015).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..errors import InputError

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
    half-angle [mrad]; detector: name in :data:`nt2c_core.simulate.detector.DETECTORS`;
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
        from .detector import DETECTORS

        _check_range("voltage (kV)", self.voltage_kv, 20.0, 1000.0)
        _check_range("Cs (mm)", self.cs_mm, 0.0, 10.0)
        _check_range("amplitude contrast", self.amplitude_contrast, 0.0, 0.5)
        _check_range("pixel size (Å)", self.pixel_size, 0.1, 20.0)
        _check_range("phase shift (deg)", self.phase_shift_deg, -180.0, 180.0)
        _check_range("dose (e/Å²)", self.dose, 1e-3, 1000.0)
        _check_range("B-factor (Å²)", self.b_factor, 0.0, 1000.0)
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
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(f"{name} = {value}: outside the physical range [{low}, {high}]")


def frequency_grid(shape: tuple[int, int], pixel_size: float, device="cpu",
                   dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial frequencies (kx, ky) in 1/Å of an rfft2 of an image of ``shape`` = (H, W)."""
    h, w = shape
    ky = torch.fft.fftfreq(h, d=pixel_size, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(w, d=pixel_size, device=device, dtype=dtype)
    return kx[None, :].expand(h, -1), ky[:, None].expand(-1, kx.numel())


def ctf(shape: tuple[int, int], acq: Acquisition, defocus_u: float, defocus_v: float | None = None,
        astigmatism_angle: float = 0.0, device="cpu", envelope: bool = True) -> torch.Tensor:
    """CTF on the rfft2 grid of an image of ``shape`` (see :func:`ctf_at`). Returns float32."""
    kx, ky = frequency_grid(shape, acq.pixel_size, device)
    return ctf_at(kx, ky, acq, defocus_u, defocus_v, astigmatism_angle, envelope).float()


def ctf_at(kx: torch.Tensor, ky: torch.Tensor, acq: Acquisition, defocus_u: float,
           defocus_v: float | None = None, astigmatism_angle: float = 0.0, envelope: bool = True) -> torch.Tensor:
    """CTF -sin(chi + phase shift + arcsin(w)) (times the coherence envelope) at frequencies [1/Å].

    defocus_u/v in Å (positive = underfocus), astigmatism_angle in rad (azimuth of U from x);
    chi = pi*lambda*df(theta)*k^2 - pi/2*Cs*lambda^3*k^4.
    """
    k2 = kx * kx + ky * ky
    defocus_v = defocus_u if defocus_v is None else defocus_v
    azimuth = torch.atan2(ky, kx)
    df = 0.5 * (defocus_u + defocus_v + (defocus_u - defocus_v) * torch.cos(2.0 * (azimuth - astigmatism_angle)))
    lam = acq.wavelength
    cs = acq.cs_mm * 1e7
    chi = math.pi * lam * df * k2 - 0.5 * math.pi * cs * lam ** 3 * k2 * k2
    value = -torch.sin(chi + math.radians(acq.phase_shift_deg) + math.asin(acq.amplitude_contrast))
    if envelope:
        value = value * coherence_envelope(k2, df, acq)
    return value


def coherence_envelope(k2: torch.Tensor, df: torch.Tensor | float, acq: Acquisition) -> torch.Tensor:
    """Temporal exp(-0.5 (pi lambda delta k^2)^2) times spatial exp(-pi^2 alpha^2 (Cs lambda^2 k^3 - df k)^2)."""
    lam = acq.wavelength
    cs = acq.cs_mm * 1e7
    k = torch.sqrt(k2)
    temporal = torch.exp(-0.5 * (math.pi * lam * acq.focal_spread * k2) ** 2)
    alpha = acq.illumination_mrad * 1e-3
    spatial = torch.exp(-(math.pi * alpha) ** 2 * (cs * lam ** 2 * k ** 3 - df * k) ** 2)
    return temporal * spatial


class CTFGrid:
    """Fast CTFs on one rfft2 grid: frequencies, azimuth terms and the coherence envelope are
    computed once (float32; chi up to ~1e3 rad keeps ~1e-4 rad accuracy) and reused for every
    defocus, e.g. the defocus slabs of one micrograph. The envelope uses ``envelope_defocus``."""

    def __init__(self, shape: tuple[int, int], acq: Acquisition, envelope_defocus: float | None, device="cpu"):
        kx, ky = frequency_grid(shape, acq.pixel_size, device, torch.float32)
        k2 = kx * kx + ky * ky
        inv = 1.0 / k2.clamp_min(1e-30)
        self.acq = acq
        self.k2 = k2
        self.cos2, self.sin2 = (kx * kx - ky * ky) * inv, 2.0 * kx * ky * inv  # cos 2theta, sin 2theta
        lam, cs = acq.wavelength, acq.cs_mm * 1e7
        offset = math.radians(acq.phase_shift_deg) + math.asin(acq.amplitude_contrast)
        self.base = offset - (0.5 * math.pi * cs * lam ** 3) * k2 * k2
        self.envelope = None
        if envelope_defocus is not None:
            self.envelope = coherence_envelope(k2, envelope_defocus, acq)

    def __call__(self, defocus_u: float, defocus_v: float | None = None, astigmatism_angle: float = 0.0) -> torch.Tensor:
        """Same value as :func:`ctf_at` (envelope evaluated at ``envelope_defocus``)."""
        defocus_v = defocus_u if defocus_v is None else defocus_v
        half = 0.5 * (defocus_u - defocus_v)
        df = 0.5 * (defocus_u + defocus_v) + half * (math.cos(2 * astigmatism_angle) * self.cos2
                                                      + math.sin(2 * astigmatism_angle) * self.sin2)
        value = -torch.sin(torch.addcmul(self.base, df, self.k2, value=math.pi * self.acq.wavelength))
        return value * self.envelope if self.envelope is not None else value
