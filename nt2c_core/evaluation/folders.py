"""Evaluate denoised micrographs against ground truth, file by file (matched by base name):
PSNR/SSIM (after scale/offset fit), FRC 0.5/0.143 resolutions, and eq. 5 SNR when particle
coordinates are given. Writes OUT/metrics.json and OUT/metrics.png."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import list_mrcs, read_mrc, read_star, write_json
from ..metrics import frc, psnr, regions_from_coordinates, snr_eq5, ssim
from ..plots import frc_and_psnr

log = logging.getLogger(__name__)


def evaluate_folders(
    truth_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    coords_dir: str | os.PathLike | None = None,
    box: int | None = None,
) -> dict:
    """Metrics of every prediction that has a ground truth of the same name. Never writes NaN or
    Infinity: a constant image is refused by name, a metric that is not defined (an FRC that never
    falls below its threshold) is written as null with a warning."""
    truth_dir, pred_dir = Path(truth_dir), Path(pred_dir)
    for flag, folder in (("--truth", truth_dir), ("--pred", pred_dir)) + (
        (("--coords", Path(coords_dir)),) if coords_dir is not None else ()
    ):
        if not folder.is_dir():
            raise InputError(f"{flag} {folder}: folder not found")
    if box is not None and box < 8:
        raise InputError(f"--box = {box}: the eq. 5 region must be at least 8 px")
    preds = {p.stem: p for p in list_mrcs(pred_dir)}
    truths = {p.stem: p for p in list_mrcs(truth_dir)}
    names = sorted(set(preds) & set(truths))
    if not names:
        raise InputError(f"{pred_dir}: no micrograph whose name matches one in {truth_dir}")
    per_file, curves = {}, {}
    for name in names:
        pred, pixel = read_mrc(preds[name])
        truth, _ = read_mrc(truths[name])
        if pred.shape != truth.shape:
            raise InputError(f"{preds[name]}: shape {pred.shape} differs from the truth's {truth.shape}")
        for path, image in ((preds[name], pred), (truths[name], truth)):
            if float(image.std()) == 0.0:
                raise InputError(f"{path}: the image is constant; PSNR, SSIM and FRC are not defined for it")
        if box is not None and box > min(pred.shape) // 2:
            raise InputError(f"--box = {box}: larger than half of {preds[name]} ({pred.shape[1]} x {pred.shape[0]} px)")
        curve = frc(pred, truth, pixel or 1.0)
        row = {
            "psnr_db": psnr(pred, truth),
            "ssim": ssim(pred, truth),
            "frc_0.5_A": curve.resolution(0.5),
            "frc_0.143_A": curve.resolution(0.143),
        }
        if coords_dir is not None:
            row["snr_eq5_db"] = _snr_from_star(pred, Path(coords_dir) / f"{name}.star", box)
        for key, value in row.items():
            if not np.isfinite(value):
                log.warning(f"{preds[name]}: {key} is not defined (the curve never crosses it); written as null")
                row[key] = None
        per_file[name] = row
        curves[name] = curve
    keys = per_file[names[0]].keys()
    summary = {}
    for k in keys:
        values = [r[k] for r in per_file.values() if r[k] is not None]
        summary[k] = {
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values)) if values else None,
        }
    result = {"truth": str(truth_dir), "pred": str(pred_dir), "files": per_file, "summary": summary}
    out = Path(out_dir)
    write_json(out / "metrics.json", result)
    frc_and_psnr(out / "metrics.png", per_file, curves)
    return result


def _snr_from_star(image: np.ndarray, star: Path, box: int | None) -> float:
    coords = read_star(star)
    xy = np.stack([coords["rlnCoordinateX"], coords["rlnCoordinateY"]], 1)
    size = box or max(16, min(image.shape) // 8)
    pairs = regions_from_coordinates(image.shape, xy, size, size / 2)
    if not pairs:
        raise InputError(f"{star}: no particle with a clear background region for eq. 5 SNR")
    return snr_eq5(image, pairs)
