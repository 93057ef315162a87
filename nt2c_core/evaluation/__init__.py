"""Judging denoisers: ``folders`` (``nt2c evaluate``: PSNR/SSIM/FRC/eq. 5 SNR of denoised
micrographs against ground truth) and ``picking`` (a conventional DoG picker and pick scoring, to
measure denoisers by picking, and the particle count behind ``nt2c run``'s ``density: match``).
The model choice of ``nt2c run`` is in :mod:`nt2c_core.selection`; the metrics in
:mod:`nt2c_core.metrics`."""

from .folders import evaluate_folders

__all__ = ["evaluate_folders"]
