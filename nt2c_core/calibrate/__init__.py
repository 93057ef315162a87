"""Calibrate the simulator to real micrographs (SaID's point 1): estimate from the micrographs
themselves what the simulation must reproduce, and measure how close calibrated simulation gets.

Per micrograph (all from the Welch power spectrum of the contrast image ``x/mean - 1``):
- defocus and astigmatism: the CTF^2 ring pattern is fitted to the spectrum in 1-D (grid search
  over defocus, correlating ring modulations after removing a smooth background) then refined in
  2-D (mean defocus, astigmatism, angle). Rings too weak to be significant -> no estimate.
- dose and gain: above 0.25 Nyquist, the radial spectrum is fitted (non-negative least squares) as
  a*NNPS(f) + b*ice(k) + c*signal(k), where NNPS is the detector's noise shape, ice the amorphous
  ice spectrum through the fitted CTF and MTF, signal a B-factor-damped protein spectrum through the
  same, everything through an image low-pass exp(-beta f^2) whose beta is fitted too (real EPU
  images fall off far more than any detector noise model). For a counting detector the shot-noise level a = 1 / (N
  DQE0), N = electrons per pixel, so
  dose = N / pixel_size^2 and gain = mean value / N (EPU-scaled integers, say). b gives the ice
  thickness.

What could not be estimated (no Thon rings, a non-counting detector, a dose that cannot be right
for the stated pixel size) falls back to the given value, with the reason in ``notes``: never
silently to nonsense.

Modules: ``defocus`` (Thon rings), ``noise`` (dose, gain, ice, image low-pass; non-count input),
``estimate`` (per micrograph and combined), ``compare`` (real vs simulated spectra), ``files``
(``nt2c calibrate`` on files, calibration.json); the figure is drawn by :mod:`nt2c_core.plots`.
"""

from .compare import background_tiles, compare_to_simulation
from .defocus import check_rings, fit_defocus, grid_defocus
from .estimate import Calibration, MicrographEstimate, calibrate, estimate_micrograph, split_halves
from .files import apply_calibration, calibrate_files
from .noise import fit_noise, not_counts

__all__ = [
    "Calibration",
    "MicrographEstimate",
    "apply_calibration",
    "background_tiles",
    "calibrate",
    "calibrate_files",
    "check_rings",
    "compare_to_simulation",
    "estimate_micrograph",
    "fit_defocus",
    "fit_noise",
    "grid_defocus",
    "not_counts",
    "split_halves",
]
