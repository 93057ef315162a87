"""Detectors and noise: MTF, noise power spectrum, DQE, shot noise, amorphous ice texture.

Counting detectors are modelled by (McMullan et al. 2014; Ruskin et al. 2013 in spirit):
MTF(f) = sinc(pi f) exp(-beta f^2) and NNPS(f) = (1 - c) + c sinc^2(pi f), f in cycles/px, so
DQE(f) = DQE0 MTF^2 / NNPS. These are smooth approximations with typical shapes, not vendor
curves. Recipe that reproduces them: filter the image by MTF/sqrt(NNPS), draw
Poisson(dose px^2 DQE0 I), rescale by 1/DQE0, filter by sqrt(NNPS). The expected image is then
exactly the MTF-filtered intensity times dose px^2 (the clean target).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .optics import Acquisition, ctf, frequency_grid


@dataclass(frozen=True)
class Detector:
    """A detector model: ``beta`` MTF Gaussian fall-off, ``dqe0`` DQE at zero frequency,
    ``nnps_c`` how far the normalized noise power drops towards Nyquist (0 = white)."""

    name: str
    beta: float
    dqe0: float
    nnps_c: float
    pixelated: bool = True

    def mtf(self, f: torch.Tensor) -> torch.Tensor:
        """Modulation transfer function at frequency f (cycles/px)."""
        if not self.pixelated:
            return torch.ones_like(f)
        return torch.sinc(f) * torch.exp(-self.beta * f * f)

    def nnps(self, f: torch.Tensor) -> torch.Tensor:
        """Normalized noise power spectrum at frequency f (cycles/px); 1 at f = 0."""
        return (1.0 - self.nnps_c) + self.nnps_c * torch.sinc(f) ** 2

    def dqe(self, f: torch.Tensor) -> torch.Tensor:
        """Detective quantum efficiency DQE0 MTF^2 / NNPS."""
        return self.dqe0 * self.mtf(f) ** 2 / self.nnps(f)


DETECTORS: dict[str, Detector] = {
    "ideal": Detector("ideal", beta=0.0, dqe0=1.0, nnps_c=0.0, pixelated=False),
    "K2": Detector("K2", beta=2.0, dqe0=0.80, nnps_c=0.30),
    "K3": Detector("K3", beta=0.0, dqe0=0.85, nnps_c=0.20),
    "Falcon4": Detector("Falcon4", beta=8.0, dqe0=0.90, nnps_c=0.40),
}


def radial_frequency_px(shape: tuple[int, int], device="cpu") -> torch.Tensor:
    """|f| in cycles/px (float32) on the rfft2 grid of an image of ``shape``."""
    kx, ky = frequency_grid(shape, 1.0, device, torch.float32)
    return torch.sqrt(kx * kx + ky * ky)


def apply_detector(intensity: torch.Tensor, acq: Acquisition, rng: np.random.Generator) -> torch.Tensor:
    """Noisy counts per pixel from a relative intensity image (mean about 1) at the acquisition's dose.

    Shot noise is drawn with numpy's ``rng`` on the CPU, so the same seed gives the same counts
    on any device. Returns float32 counts on the input's device.
    """
    det = DETECTORS[acq.detector]
    mean_counts = acq.dose * acq.pixel_size**2
    shape = tuple(intensity.shape)
    if det.pixelated:
        f = radial_frequency_px(shape, intensity.device)
        root_nnps = torch.sqrt(det.nnps(f))
        intensity = torch.fft.irfft2(torch.fft.rfft2(intensity) * (det.mtf(f) / root_nnps), s=shape)
    rate = (intensity.clamp_min(0) * (mean_counts * det.dqe0)).double().cpu().numpy()
    counts = torch.from_numpy(rng.poisson(rate).astype(np.float32) / np.float32(det.dqe0))
    counts = counts.to(intensity.device)
    if det.pixelated:
        counts = torch.fft.irfft2(torch.fft.rfft2(counts) * root_nnps, s=shape)
    if acq.image_filter > 0:
        counts = torch.fft.irfft2(
            torch.fft.rfft2(counts) * image_filter(shape, acq.image_filter, counts.device), s=shape
        )
    return counts


def image_filter(shape: tuple[int, int], beta: float, device="cpu") -> torch.Tensor:
    """exp(-beta f^2) on the rfft2 grid (f in cycles/px): the recorded image's low-pass."""
    f = radial_frequency_px(shape, device)
    return torch.exp(-beta * f * f)


def mtf_filter(image_ft: torch.Tensor, shape: tuple[int, int], detector: str, beta: float = 0.0) -> torch.Tensor:
    """Multiply an rfft2 spectrum by the detector's MTF (and the image filter exp(-beta f^2))."""
    det = DETECTORS[detector]
    if beta > 0:
        image_ft = image_ft * image_filter(shape, beta, image_ft.device)
    if not det.pixelated:
        return image_ft
    return image_ft * det.mtf(radial_frequency_px(shape, image_ft.device))


# --- amorphous ice --------------------------------------------------------------------------

ICE_PEAK_FREQUENCY = 1 / 3.7  # water ring [1/Å]
ICE_REFERENCE = dict(thickness=300.0, dose=40.0, ratio=0.3, defocus=15000.0)


def ice_phase_spectrum_shape(k: torch.Tensor) -> torch.Tensor:
    """Shape of the ice projected-phase power spectrum: (k/kp)^2 exp(1-(k/kp)^2), peak 1 at kp."""
    q2 = (k / ICE_PEAK_FREQUENCY) ** 2
    return q2 * torch.exp(1.0 - q2)


@lru_cache(maxsize=None)
def ice_amplitude() -> float:
    """Phase power per Å of ice [rad^2 Å^2 / Å] that makes the ice texture's variance
    ICE_REFERENCE['ratio'] x the shot-noise variance at 300 Å ice, 40 e/Å^2, 1 Å/px, 1.5 µm
    defocus, 300 kV, ideal detector (the level seen in real micrographs, shared design notes).
    Calibrated once numerically on a 512^2 grid; SaID-style calibration may override it."""
    acq = Acquisition(pixel_size=1.0, dose=ICE_REFERENCE["dose"], detector="ideal")
    shape = (512, 512)
    kx, ky = frequency_grid(shape, 1.0)
    spectrum = ice_phase_spectrum_shape(torch.sqrt(kx * kx + ky * ky)) * ICE_REFERENCE["thickness"]
    transfer = (2 * ctf(shape, acq, ICE_REFERENCE["defocus"]).double()) ** 2
    weights = torch.full_like(transfer, 2.0)
    weights[:, 0] = 1.0
    weights[:, -1] = 1.0
    # variance of the contrast for unit amplitude: integral of P * transfer over frequency
    variance_per_amp = float((weights * spectrum * transfer).sum()) / (shape[0] * shape[1] * acq.pixel_size**2)
    target = ICE_REFERENCE["ratio"] / (acq.dose * acq.pixel_size**2)
    return target / variance_per_amp


def ice_phase_ft(
    shape: tuple[int, int], pixel_size: float, thickness: float, rng: np.random.Generator, device="cpu"
) -> torch.Tensor:
    """rfft2 of a Gaussian random phase field [rad] of amorphous ice of ``thickness`` Å."""
    if thickness <= 0:
        return torch.zeros((shape[0], shape[1] // 2 + 1), dtype=torch.complex64, device=device)
    white = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(device)
    kx, ky = frequency_grid(shape, pixel_size, device, torch.float32)
    power = ice_phase_spectrum_shape(torch.sqrt(kx * kx + ky * ky)) * (ice_amplitude() * thickness)
    return torch.fft.rfft2(white) * (torch.sqrt(power) / pixel_size)
