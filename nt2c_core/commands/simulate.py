"""``nt2c simulate``: clean/noisy micrograph pairs from atomic models."""

from __future__ import annotations

import argparse
import logging

from ..acquisition import Acquisition
from ..settings import DETECTORS, TRAINING_SIMULATION, SimulationConfig
from . import add_settings_argument, register, settings_or_options

log = logging.getLogger(__name__)


def add_acquisition_arguments(p: argparse.ArgumentParser) -> None:
    d = Acquisition()
    p.add_argument("--voltage", type=float, default=d.voltage_kv, help="accelerating voltage [kV]")
    p.add_argument("--cs", type=float, default=d.cs_mm, help="spherical aberration [mm]")
    p.add_argument("--amplitude-contrast", type=float, default=d.amplitude_contrast, help="fraction, 0-0.5")
    p.add_argument("--pixel-size", type=float, default=d.pixel_size, help="pixel size [Å/px]")
    p.add_argument("--phase-shift", type=float, default=d.phase_shift_deg, help="phase-plate shift [deg]")
    p.add_argument("--dose", type=float, default=d.dose, help="total exposure [e/Å²]")
    p.add_argument("--b-factor", type=float, default=d.b_factor, help="image B-factor [Å²]")
    p.add_argument("--detector", default=d.detector, choices=sorted(DETECTORS), help="detector model")


def acquisition_from(args: argparse.Namespace) -> Acquisition:
    return Acquisition(
        voltage_kv=args.voltage,
        cs_mm=args.cs,
        amplitude_contrast=args.amplitude_contrast,
        pixel_size=args.pixel_size,
        phase_shift_deg=args.phase_shift,
        dose=args.dose,
        b_factor=args.b_factor,
        detector=args.detector,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SimulationConfig()
    p.add_argument("-o", "--output", required=True, help="output folder (clean/, noisy/, coords/, params.json)")
    p.add_argument(
        "--structure",
        action="append",
        required=True,
        metavar="PATH",
        help="PDB/mmCIF file, gzipped or not (repeat for several species)",
    )
    add_acquisition_arguments(p)
    p.add_argument(
        "--defocus",
        type=float,
        nargs=2,
        default=list(d.defocus_um),
        metavar=("MIN", "MAX"),
        help="nominal defocus range [µm], positive = underfocus",
    )
    p.add_argument("--astigmatism", type=float, default=d.astigmatism_um, help="defocus U - V [µm]")
    p.add_argument("--ice-thickness", type=float, default=d.ice_thickness, help="ice thickness [Å]")
    p.add_argument(
        "--carbon-fraction",
        type=float,
        default=TRAINING_SIMULATION.carbon_fraction,
        help="fraction of the micrographs taken near the rim of a hole in a carbon film (0-1; default "
        "%(default)s, as 'nt2c run' and the Scipion protocols train on; 0 = none, the paper's)",
    )
    p.add_argument(
        "--ice-gradient",
        type=float,
        default=d.ice_gradient,
        help="uneven ice: largest relative change of the ice thickness from a micrograph's centre to its "
        "edge (0.3 = up to +-30 %%, a ramp in a random direction; 0 = flat ice)",
    )
    p.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("W", "H"), help="micrograph size [px]")
    p.add_argument("--particles", type=int, default=d.particles, help="particles per micrograph")
    p.add_argument("--concentration", type=float, default=None, help="particles per µm² (overrides --particles)")
    p.add_argument("--count", type=int, default=d.count, help="number of micrographs")
    p.add_argument(
        "--library", type=int, default=0, help="batch mode: draw from N precomputed projections per structure (0 = off)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--overwrite", action="store_true", help="replace an existing simulation in the folder")
    p.add_argument(
        "--calibration",
        metavar="JSON",
        help="calibration.json from 'nt2c calibrate': its acquisition, defocus range, astigmatism and "
        "ice thickness replace the options above",
    )
    add_settings_argument(p, "the simulation's settings (acquisition, defocus, size, particles, count, seed)")


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """The simulation set by the options."""
    return SimulationConfig(
        acquisition=acquisition_from(args),
        defocus_um=tuple(args.defocus),
        astigmatism_um=args.astigmatism,
        ice_thickness=args.ice_thickness,
        size=tuple(args.size),
        particles=args.particles,
        concentration=args.concentration,
        count=args.count,
        seed=args.seed,
        library_size=args.library,
        carbon_fraction=args.carbon_fraction,
        ice_gradient=args.ice_gradient,
    )


def run(args: argparse.Namespace) -> int:
    config = settings_or_options(args, SimulationConfig, simulation_config)
    if args.calibration:
        from ..calibrate import apply_calibration

        config = apply_calibration(config, args.calibration)
    from ..simulate import simulate_dataset

    summary = simulate_dataset(args.structure, config, args.output, device=args.device, overwrite=args.overwrite)
    log.info(f"wrote {len(summary.names)} clean/noisy pairs to {summary.folder}")
    return 0


register("simulate", "Simulate clean/noisy micrograph pairs from atomic models.", add_arguments, run)
