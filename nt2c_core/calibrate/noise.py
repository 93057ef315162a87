"""Dose, gain, ice and image low-pass from the radial spectrum above 0.25 Nyquist, and the
detection of images that are not detector counts (8-bit exports, contrast-stretched)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import nnls

from ..simulate import Acquisition
from ..simulate.detector import DETECTORS, ICE_PEAK_FREQUENCY
from ..spectra import Spectrum
from .defocus import _ctf2

PLAUSIBLE_DOSE = (5.0, 200.0)

BETA_GRID = np.arange(0.0, 40.01, 0.5)  # image filter exp(-beta f^2) candidates

SIGNAL_B_FACTOR = 60.0  # Å^2, power ~ exp(-B k^2 / 2): image B-factor plus atomic form factors


def fit_noise(spectrum: Spectrum, acq: Acquisition, df_u: float, df_v: float, angle: float) -> dict:
    """Non-negative fit of the radial spectrum above 0.25 Nyquist: shot-noise level (contrast^2 per
    pixel at zero frequency), ice and signal weights, all through the image filter exp(-beta f^2)
    whose beta (0-40, f in cycles/px) fits best. Returns the four and the relative residual."""
    det = DETECTORS[acq.detector]
    kx, ky = spectrum.kxy()
    f = torch.from_numpy(spectrum.k * acq.pixel_size)
    mtf2 = det.mtf(f).numpy() ** 2
    ctf2 = _ctf2(kx, ky, acq, df_u, df_v, angle, envelope=True)
    q2 = (spectrum.k / ICE_PEAK_FREQUENCY) ** 2
    terms = [
        det.nnps(f).numpy(),
        4 * ctf2 * mtf2 * q2 * np.exp(1 - q2),
        ctf2 * mtf2 * np.exp(-0.5 * SIGNAL_B_FACTOR * spectrum.k**2),
    ]
    k, p = spectrum.radial()
    design = np.stack([spectrum.radial(t)[1] for t in terms], axis=1)
    sel = (k >= 0.25 * spectrum.nyquist) & (k <= 0.95 * spectrum.nyquist)
    f2 = (k[sel] * acq.pixel_size) ** 2
    best = None
    for beta in BETA_GRID:
        x = design[sel] * np.exp(-2 * beta * f2)[:, None] / p[sel, None]  # relative residuals
        coef, _ = nnls(x, np.ones(int(sel.sum())))
        residual = float(np.sqrt(np.mean((x @ coef - 1) ** 2)))
        if best is None or residual < best["residual"] - 1e-4:
            best = {
                "shot": float(coef[0]),
                "ice": float(coef[1]),
                "signal": float(coef[2]),
                "image_filter": float(beta),
                "residual": residual,
            }
    return best


# --- per micrograph and per data set -----------------------------------------------------------


def not_counts(image: np.ndarray) -> str | None:
    """Why an image is not a micrograph in detector counts, or None: an 8-bit export (integers
    spanning most of 0-255: counting data at a dose that low spans far less) or a contrast stretch
    (over 0.5 % of the pixels saturated at the highest value, or piled at a lowest value other
    than 0, which low-dose counts can legitimately reach). Such images keep the Thon rings
    (defocus can be fitted) but not the shot-noise level (dose, gain, ice)."""
    x = np.asarray(image)
    sample = x.ravel()[:: max(1, x.size // 1_000_000)]
    lo, hi = float(sample.min()), float(sample.max())
    levels = np.unique(sample)
    if len(levels) <= 256 and np.allclose(levels, np.round(levels)) and lo >= 0 and hi <= 255 and hi - lo >= 128:
        return f"{len(levels)} grey levels between {lo:g} and {hi:g} (an 8-bit export)"
    top, bottom = float(np.mean(sample == hi)), float(np.mean(sample == lo))
    if top > 0.005:
        return f"{100 * top:.1f} % of the pixels saturated at the highest value {hi:g} (contrast-stretched)"
    if bottom > 0.005 and lo != 0:
        return f"{100 * bottom:.1f} % of the pixels piled at the lowest value {lo:g} (contrast-stretched)"
    return None
