"""``nt2c calibrate``: estimate the simulator's settings (defocus, dose, gain, ice) from real micrographs."""

from __future__ import annotations

import argparse
import logging
import math

from ..errors import InputError
from ..settings import SimulationConfig
from . import add_settings_argument, register, settings_or_options
from .simulate import acquisition_from, add_acquisition_arguments

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="RAW.mrc", help="real micrographs (counts, not normalized)")
    p.add_argument("-o", "--output", required=True, help="output folder (calibration.json, calibration.png)")
    add_acquisition_arguments(p)
    p.set_defaults(dose=None)
    p.add_argument(
        "--defocus",
        type=float,
        nargs=2,
        default=[1.0, 2.5],
        metavar=("MIN", "MAX"),
        help="defocus range [µm] used when the micrographs give none",
    )
    p.add_argument(
        "--known-defocus",
        type=float,
        nargs=3,
        metavar=("U", "V", "ANGLE"),
        help="accept these (U, V [µm], angle [deg]) instead of fitting the CTF",
    )
    p.add_argument(
        "--ice-thickness",
        type=float,
        default=SimulationConfig().ice_thickness,
        help="ice thickness [Å] used when the micrographs give none",
    )
    p.add_argument(
        "--structure",
        action="append",
        default=[],
        metavar="PATH",
        help="PDB/mmCIF file: also compare simulated with real spectra before/after (PNG)",
    )
    p.add_argument(
        "--not-counting", action="store_true", help="integrating detector: the dose cannot be read from the shot noise"
    )
    p.add_argument("--max-micrographs", type=int, default=8, help="calibrate on at most this many (spread out)")
    add_settings_argument(p, "the simulation to calibrate (its acquisition, dose given, defocus and ice as fallbacks)")


def run(args: argparse.Namespace) -> int:
    dose_given = args.dose is not None or bool(args.settings)
    if args.dose is None:
        args.dose = 40.0
    base = settings_or_options(
        args,
        SimulationConfig,
        lambda a: SimulationConfig(acquisition_from(a), defocus_um=tuple(a.defocus), ice_thickness=a.ice_thickness),
    )
    base.acquisition.validate()  # a pixel size of 0 or a NaN dose is refused before any micrograph is read
    known = None
    if args.known_defocus:
        u, v, angle = args.known_defocus
        if not all(math.isfinite(x) for x in (u, v, angle)) or not (-5 <= u <= 20 and -5 <= v <= 20):
            raise InputError(f"--known-defocus = {u} {v} {angle}: need finite values, U and V within -5..20 µm")
        known = (u * 1e4, v * 1e4, math.radians(angle))
    from ..calibrate import calibrate_files
    from ..pipeline import raw_files

    result = calibrate_files(
        raw_files(args.inputs),
        base,
        args.output,
        args.structure,
        not args.not_counting,
        known,
        dose_given,
        args.max_micrographs,
    )
    sim = result.simulation
    log.info(
        f"calibrated: defocus {sim.defocus_um[0]:.3f}-{sim.defocus_um[1]:.3f} µm, astigmatism "
        f"{sim.astigmatism_um:.3f} µm, dose {sim.acquisition.dose:.1f} e/Å², ice {sim.ice_thickness:.0f} Å"
    )
    for note in result.notes:
        log.warning(f"note: {note}")
    log.info(f"wrote {args.output}/calibration.json")
    return 0


register("calibrate", "Estimate simulation settings (defocus, dose, ice) from real micrographs.", add_arguments, run)
