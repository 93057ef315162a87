"""Electron optics: wavelength, interaction constant, contrast transfer function, envelopes.

Units: voltage in V (functions) or kV (:class:`Acquisition`), lengths in Å, spatial frequency in
1/Å, angles in rad unless named ``*_deg``. Defocus is positive for underfocus; astigmatism follows
CTFFIND (defocus U/V and the azimuth of U). References: Kirkland (2010); Rohou & Grigorieff (2015).
"""

from __future__ import annotations

import math

import torch

from ..acquisition import ELECTRON_REST_ENERGY_EV, Acquisition, interaction_constant, wavelength  # noqa: F401


def frequency_grid(
    shape: tuple[int, int], pixel_size: float, device="cpu", dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial frequencies (kx, ky) in 1/Å of an rfft2 of an image of ``shape`` = (H, W)."""
    h, w = shape
    ky = torch.fft.fftfreq(h, d=pixel_size, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(w, d=pixel_size, device=device, dtype=dtype)
    return kx[None, :].expand(h, -1), ky[:, None].expand(-1, kx.numel())


def ctf(
    shape: tuple[int, int],
    acq: Acquisition,
    defocus_u: float,
    defocus_v: float | None = None,
    astigmatism_angle: float = 0.0,
    device="cpu",
    envelope: bool = True,
) -> torch.Tensor:
    """CTF on the rfft2 grid of an image of ``shape`` (see :func:`ctf_at`). Returns float32."""
    kx, ky = frequency_grid(shape, acq.pixel_size, device)
    return ctf_at(kx, ky, acq, defocus_u, defocus_v, astigmatism_angle, envelope).float()


def ctf_at(
    kx: torch.Tensor,
    ky: torch.Tensor,
    acq: Acquisition,
    defocus_u: float,
    defocus_v: float | None = None,
    astigmatism_angle: float = 0.0,
    envelope: bool = True,
) -> torch.Tensor:
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
    chi = math.pi * lam * df * k2 - 0.5 * math.pi * cs * lam**3 * k2 * k2
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
    spatial = torch.exp(-((math.pi * alpha) ** 2) * (cs * lam**2 * k**3 - df * k) ** 2)
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
        self.base = offset - (0.5 * math.pi * cs * lam**3) * k2 * k2
        self.envelope = None
        if envelope_defocus is not None:
            self.envelope = coherence_envelope(k2, envelope_defocus, acq)

    def __call__(
        self, defocus_u: float, defocus_v: float | None = None, astigmatism_angle: float = 0.0
    ) -> torch.Tensor:
        """Same value as :func:`ctf_at` (envelope evaluated at ``envelope_defocus``)."""
        defocus_v = defocus_u if defocus_v is None else defocus_v
        half = 0.5 * (defocus_u - defocus_v)
        df = 0.5 * (defocus_u + defocus_v) + half * (
            math.cos(2 * astigmatism_angle) * self.cos2 + math.sin(2 * astigmatism_angle) * self.sin2
        )
        value = -torch.sin(torch.addcmul(self.base, df, self.k2, value=math.pi * self.acq.wavelength))
        return value * self.envelope if self.envelope is not None else value
