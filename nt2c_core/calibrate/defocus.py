"""Defocus and astigmatism from the Thon rings of a power spectrum (the CTF^2 ring pattern
fitted in 1-D by a grid search, refined in 2-D), and the check that the rings are real."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import minimize

from ..simulate import Acquisition
from ..simulate.detector import ICE_PEAK_FREQUENCY
from ..simulate.optics import ctf_at
from ..spectra import Spectrum

DEFOCUS_GRID_UM = (0.2, 8.0)

MIN_RING_SCORE = 0.2  # correlation of the fitted rings with the spectrum

RING_AGREEMENT = 0.05  # two halves of the data must agree on the defocus within 5 %

RING_MARGIN = 0.2  # and the ring score must beat the halves' difference (noise only) by this


def fit_defocus(spectrum: Spectrum, acq: Acquisition) -> tuple[float, float, float, float]:
    """(defocus_u, defocus_v [Å], astigmatism angle [rad], ring score) fitted to the spectrum;
    the score is the correlation of the radially averaged ring modulation with the fitted CTF^2."""
    k_lo, k_hi = _ring_band(spectrum)
    kx, ky = spectrum.kxy()
    band = (spectrum.k >= k_lo) & (spectrum.k <= k_hi)
    rel = _ring_modulation(spectrum, k_lo, k_hi)
    kxb, kyb, relb = kx[band], ky[band], rel[band]
    best, _ = _grid_search(*_radial_of(spectrum, rel, band), acq)  # the modulation computed above

    def cost(p):
        mean, half, angle = p
        return -_corr(relb, _ctf2(kxb, kyb, acq, mean + half, mean - half, angle))

    starts = [(best, 100.0, a) for a in (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)]
    fits = [minimize(cost, s, method="Nelder-Mead", options=dict(xatol=1.0, fatol=1e-5, maxiter=400)) for s in starts]
    mean, half, angle = min(fits, key=lambda r: r.fun).x
    if half < 0:
        half, angle = -half, angle + math.pi / 2
    model = np.zeros_like(rel)
    model[band] = _ctf2(kxb, kyb, acq, mean + half, mean - half, angle)
    kr, prof = _radial_of(spectrum, rel, band)
    score = float(_residual(kr, _radial_of(spectrum, model, band)[1][None])[0] @ _residual(kr, prof[None])[0])
    return mean + half, mean - half, float(angle % math.pi), float(score)


def grid_defocus(spectrum: Spectrum, acq: Acquisition) -> tuple[float, float]:
    """(defocus [Å], correlation): 1-D search, 5 nm steps over DEFOCUS_GRID_UM, of the radially
    averaged ring modulation against an astigmatism-free CTF^2."""
    return _grid_search(*_ring_profile(spectrum), acq)


def _ring_profile(spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    k_lo, k_hi = _ring_band(spectrum)
    band = (spectrum.k >= k_lo) & (spectrum.k <= k_hi)
    return _radial_of(spectrum, _ring_modulation(spectrum, k_lo, k_hi), band)


def _grid_search(kr: np.ndarray, prof: np.ndarray, acq: Acquisition) -> tuple[float, float]:
    grid = np.arange(DEFOCUS_GRID_UM[0], DEFOCUS_GRID_UM[1], 0.005) * 1e4
    models = _residual(kr, np.stack([_ctf2(kr, 0 * kr, acq, d, d, 0.0) for d in grid]))
    scores = models @ _residual(kr, prof[None])[0]
    i = int(np.argmax(scores))
    return float(grid[i]), float(scores[i])


@dataclass
class RingCheck:
    """Are the rings real? Each half of the data is fitted alone (``defoci``, Å): real rings agree
    within RING_AGREEMENT. ``null_score``: the best ring score of the difference of the halves'
    ring profiles, where real rings cancel and only the noise's chance matches stay."""

    defoci: list[float]
    null_score: float

    def passed(self, score: float) -> bool:
        d1, d2 = self.defoci
        agree = abs(d1 - d2) <= RING_AGREEMENT * 0.5 * (d1 + d2)
        return agree and score >= MIN_RING_SCORE and score >= self.null_score + RING_MARGIN


def check_rings(halves: Sequence[Spectrum], acq: Acquisition) -> RingCheck:
    """Fit the two halves alone and the difference of their ring profiles (see :class:`RingCheck`)."""
    (k1, p1), (_, p2) = (_ring_profile(h) for h in halves)
    defoci = [_grid_search(k1, p, acq)[0] for p in (p1, p2)]
    return RingCheck(defoci, _grid_search(k1, p1 - p2, acq)[1])


def _ring_band(spectrum: Spectrum) -> tuple[float, float]:
    """Rings are fitted from 1/40 Å^-1 to the ice ring region or 0.9 Nyquist, whichever is lower."""
    return 1 / 40.0, min(0.9 * spectrum.nyquist, 1.05 * ICE_PEAK_FREQUENCY)


def _ring_modulation(spectrum: Spectrum, k_lo: float, k_hi: float) -> np.ndarray:
    """power / smooth background - 1: the background is a degree-6 polynomial in k fitted to the
    log of the radial profile over the band."""
    k, p = spectrum.radial()
    sel = (k >= k_lo * 0.8) & (k <= k_hi * 1.05) & (p > 0)
    coef = np.polynomial.polynomial.polyfit(k[sel], np.log(p[sel]), 6)
    background = np.exp(np.polynomial.polynomial.polyval(np.clip(spectrum.k, k[sel][0], k[sel][-1]), coef))
    return spectrum.power / background - 1.0


def _radial_of(spectrum: Spectrum, values: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k, v = spectrum.radial(np.where(band, values, 0.0))
    kb, nb = spectrum.radial(band.astype(float))
    keep = nb > 0.99
    return k[keep], v[keep]


def _residual(k: np.ndarray, rows: np.ndarray, degree: int = 6) -> np.ndarray:
    """Rows with their smooth part (a degree-``degree`` polynomial in k) removed, scaled to unit
    norm: correlations of such rows are partial correlations given a smooth background, so a
    model is not rewarded for matching slow trends of the spectrum."""
    t = (k - k.mean()) / max(np.ptp(k), 1e-30)
    basis, _ = np.linalg.qr(np.vander(t, degree + 1))
    out = rows - (rows @ basis) @ basis.T
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)


def _ctf2(
    kx: np.ndarray, ky: np.ndarray, acq: Acquisition, df_u: float, df_v: float, angle: float, envelope: bool = False
) -> np.ndarray:
    value = ctf_at(
        torch.from_numpy(np.ascontiguousarray(kx, dtype=np.float64)),
        torch.from_numpy(np.ascontiguousarray(ky, dtype=np.float64)),
        acq,
        df_u,
        df_v,
        angle,
        envelope,
    )
    return value.numpy() ** 2


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


# --- dose, gain, ice ---------------------------------------------------------------------------
