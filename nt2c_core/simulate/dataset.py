"""Write a simulated dataset: DIR/clean/*.mrc, DIR/noisy/*.mrc, DIR/coords/*.star, DIR/params.json.

A run is resumable: micrographs whose three files exist are skipped when ``params.json`` holds the
same parameters (each micrograph's random numbers depend on (seed, index) only). A folder holding a
different simulation is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from .. import __version__
from ..device import resolve_device  # noqa: F401 (re-exported)
from ..errors import InputError
from ..io import ensure_writable_dir, write_json, write_mrc, write_star
from ..logs import progress as progress_bar
from ..logs import staged
from .micrograph import MicrographSimulator, SimulatedMicrograph, SimulationConfig
from .structure import load_structure

log = logging.getLogger(__name__)

STAR_COLUMNS = (
    "rlnCoordinateX",
    "rlnCoordinateY",
    "rlnAngleRot",
    "rlnAngleTilt",
    "rlnAnglePsi",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnClassNumber",
    "rlnMicrographName",
)


@dataclass
class DatasetSummary:
    """What a simulation run wrote: folder, micrograph base names, per-micrograph pixel SNR."""

    folder: Path
    names: list[str]
    snr: dict[str, float]


@staged("simulate")
def simulate_dataset(
    structures: Sequence[str | os.PathLike],
    config: SimulationConfig,
    out_dir: str | os.PathLike,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetSummary:
    """Simulate ``config.count`` clean/noisy micrograph pairs of the given PDB/mmCIF ``structures``.

    Every input is checked before anything is written; files are written atomically.
    """
    config.validate()
    models = [load_structure(p) for p in structures]
    simulator = MicrographSimulator(models, config, resolve_device(device))
    out = ensure_writable_dir(out_dir)
    params = {
        "nt2c_version": __version__,
        "torch_version": torch.__version__,
        "config": config.to_dict(),
        "structures": [
            {"class_number": i + 1, "name": m.name, "path": m.path, "atoms": m.n_atoms, "radius_A": round(m.radius, 2)}
            for i, m in enumerate(models)
        ],
    }
    _check_previous_run(out / "params.json", params, overwrite)
    write_json(out / "params.json", params)
    names, snr = [], {}
    previous = {} if overwrite else _previous(out / "params.json")
    placed = dict(previous.get("particles_placed", {}))
    edges = dict(previous.get("carbon_edges", {}))  # micrographs near a carbon rim: where it lies (px)
    wanted = config.particles_per_micrograph()
    for index in progress_bar(range(config.count), desc="simulate", unit="mic", disable=not progress):
        name = f"mic_{index:04d}"
        names.append(name)
        paths = _paths(out, name)
        if not overwrite and all(p.exists() for p in paths):
            continue
        mic = simulator.simulate(index)
        _write_micrograph(paths, name, mic, config.acquisition.pixel_size)
        snr[name] = mic.pixel_snr()
        placed[name] = len(mic.particles)
        if mic.edge is not None:
            edges[name] = asdict(mic.edge)
        write_json(out / "params.json", {**params, "particles_placed": placed, "carbon_edges": edges})
    _warn_crowded({n: placed[n] for n in names if n in placed}, wanted, config, simulator.radius_px)
    return DatasetSummary(out, names, snr)


def _warn_crowded(placed: dict[str, int], wanted: int, config: SimulationConfig, radius_px: float) -> None:
    """One warning for all micrographs that hold fewer particles than requested (was one per
    micrograph: 64 lines for a run at a fine pixel size)."""
    short = {name: n for name, n in placed.items() if n < wanted}
    if not short:
        return
    low, high = min(short.values()), max(short.values())
    width, height = config.size
    log.warning(
        f"warning: {len(short)} of {len(placed)} micrograph(s) ({next(iter(short))}, ...) placed "
        f"{low if low == high else f'{low}-{high}'} of {wanted} particles: no room for more without overlaps "
        f"in {width} x {height} px at {config.acquisition.pixel_size:g} Å/px (particle diameter "
        f"{2 * radius_px:.0f} px); raise the simulation size or lower the particle count (params.json "
        "records the number placed)"
    )


def _previous(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _paths(out: Path, name: str) -> tuple[Path, Path, Path]:
    return out / "clean" / f"{name}.mrc", out / "noisy" / f"{name}.mrc", out / "coords" / f"{name}.star"


def _check_previous_run(path: Path, params: dict, overwrite: bool) -> None:
    if overwrite or not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if old is None or old.get("config") != params["config"] or old.get("structures") != params["structures"]:
        raise InputError(f"{path.parent}: holds a different simulation; choose a new folder or overwrite")


def _write_micrograph(paths: tuple[Path, Path, Path], name: str, mic: SimulatedMicrograph, pixel_size: float) -> None:
    clean_path, noisy_path, star_path = paths
    write_mrc(clean_path, mic.clean, pixel_size)
    write_mrc(noisy_path, mic.noisy, pixel_size)
    rows = [
        (
            p["x"],
            p["y"],
            p["rot"],
            p["tilt"],
            p["psi"],
            p["defocus_u"],
            p["defocus_v"],
            p["defocus_angle"],
            p["kind"] + 1,
            f"{name}.mrc",
        )
        for p in mic.particles
    ]
    write_star(star_path, "particles", STAR_COLUMNS, rows)
