"""``nt2c calibrate`` on files: calibrate, compare before and after, keep the given values when
the calibration moves away from the data, write calibration.json/.png; reuse a calibration.json."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io import read_mrc, write_json
from ..logs import staged
from ..plots import plot_comparison
from ..simulate import SimulationConfig
from .compare import compare_to_simulation
from .estimate import Calibration, calibrate


def apply_calibration(config: SimulationConfig, path: str | os.PathLike) -> SimulationConfig:
    """``config`` with the acquisition, defocus range, astigmatism and ice thickness of a
    calibration.json written by 'nt2c calibrate' (``nt2c simulate --calibration``, ``nt2c run``'s
    ``calibration``: no refit)."""
    try:
        calibrated = SimulationConfig.from_dict(json.loads(Path(path).read_text())["simulation"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InputError(f"{path}: not a calibration file from 'nt2c calibrate' ({exc})") from exc
    return replace(
        config,
        acquisition=calibrated.acquisition,
        defocus_um=calibrated.defocus_um,
        astigmatism_um=calibrated.astigmatism_um,
        ice_thickness=calibrated.ice_thickness,
    )


def _varying(path, image: np.ndarray) -> np.ndarray:
    """``image``, refused by name when it is constant (blank, saturated): no spectrum to fit."""
    if float(image.std()) == 0.0:
        raise InputError(
            f"{path}: constant image (every pixel {float(image.flat[0]):g}): there is no spectrum to calibrate from"
        )
    return image


@staged("calibrate", device=lambda a: None)
def calibrate_files(
    paths: Sequence[str | os.PathLike],
    base: SimulationConfig,
    out_dir: str | os.PathLike,
    structures: Sequence[str] = (),
    counting: bool = True,
    known_defocus: tuple[float, float, float] | None = None,
    dose_given: bool = True,
    max_micrographs: int = 8,
) -> Calibration:
    """``nt2c calibrate``: calibrate on (up to ``max_micrographs`` of) the files, write
    OUT/calibration.json (the simulator's settings, estimates, notes, spectrum distances before
    and after) and OUT/calibration.png (when ``structures`` are given)."""
    if not paths:
        raise InputError("calibrate: no micrograph given")
    if max_micrographs < 1:
        raise InputError(f"--max-micrographs = {max_micrographs}: must be at least 1")
    chosen = list(paths)[:: max(1, len(paths) // max_micrographs)][:max_micrographs]
    images = [(Path(p).name, _varying(p, read_mrc(p)[0])) for p in chosen]
    result = calibrate(images, base, counting, known_defocus, dose_given)
    report = result.to_dict()
    out = Path(out_dir)
    if structures:
        from ..simulate.structure import load_structure

        models = [load_structure(p) for p in structures]  # read once for both comparisons
        before = compare_to_simulation([x for _, x in images], base, models)
        after = compare_to_simulation([x for _, x in images], result.simulation, models)
        report["spectrum_distance"] = {
            part: {"given": before[part]["log_distance"], "calibrated": after[part]["log_distance"]} for part in before
        }
        plot_comparison(out / "calibration.png", before, after)
        worse = [part for part in before if after[part]["log_distance"] > before[part]["log_distance"]]
        if worse:  # never hand back a simulation further from the data than the given values
            result.notes.append(
                f"the calibrated simulation is further from the micrographs' spectra than the given "
                f"values ({', '.join(worse)}); the given values are kept"
            )
            result.simulation = base
            report = {**result.to_dict(), "spectrum_distance": report["spectrum_distance"], "kept_given": True}
    write_json(out / "calibration.json", report)
    return result
