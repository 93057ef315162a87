"""RELION particle STAR files (3.0 and 3.1+): read keeping every block and column, write with
only the image names (and, for simulations, the geometry) changed.

Conventions (RELION): ``rlnImageName`` = ``index@stack`` (index from 1; a stack path relative to
the STAR file's folder, or to the project folder as RELION writes it), ``rlnAngleRot/Tilt/Psi``
[deg] giving A = :func:`nt2c_core.simulate.geometry.euler_to_matrix` (a map point r projects to
A r), ``rlnOriginXAngst/YAngst`` [Å] (3.1; ``rlnOriginX/Y`` [px] in 3.0): RELION's origin, the
shift that, applied to the image, centres the particle, i.e. **minus** the particle's offset from
the box centre (checked with ``relion_project``: origin X = +10 Å at 2 Å/px puts the particle 5 px
left of the centre); inside the package shifts are always the particle's offset [px], ``rlnDefocusU/V`` [Å],
``rlnDefocusAngle`` [deg]; the pixel size, voltage,
Cs and amplitude contrast in the ``optics`` block (3.1) or in each particle row (3.0).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..acquisition import Acquisition
from ..errors import InputError
from ..io import atomic_write, read_mrc
from ..simulate.geometry import euler_to_matrix, matrix_to_euler

OPTICS_COLUMNS = {
    "rlnImagePixelSize": "pixel_size",
    "rlnVoltage": "voltage_kv",
    "rlnSphericalAberration": "cs_mm",
    "rlnAmplitudeContrast": "amplitude_contrast",
}


class ParticleTable:
    """A particle STAR file in memory: ``particles`` and ``optics`` (pandas tables, optics None
    for RELION 3.0 files), the other blocks kept as read, and the folder image paths are relative to."""

    def __init__(
        self, particles, optics=None, blocks: dict | None = None, folder: Path = Path("."), path: Path | None = None
    ):
        self.particles = particles
        self.optics = optics
        self.blocks = blocks or {}
        self.folder = Path(folder)
        self.path = path

    def __len__(self) -> int:
        return len(self.particles)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ParticleTable":
        """Read a RELION particle STAR file; InputError naming the file when it is not one."""
        import starfile

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        try:
            blocks = starfile.read(path, always_dict=True)
        except Exception as exc:
            raise InputError(f"{path}: not a readable STAR file ({exc})") from None
        tables = {k: v for k, v in blocks.items() if hasattr(v, "columns")}
        named = [k for k, v in tables.items() if "rlnImageName" in v.columns]
        name = "particles" if "particles" in named else next(iter(named), None)
        if name is None:
            empty = [k for k, v in tables.items() if k != "optics" and len(v.columns) and not len(v)]
            if empty:
                raise InputError(f"{path}: no particles (the table {empty[0]!r} has no rows)")
            raise InputError(f"{path}: no particle table with rlnImageName (blocks: {', '.join(blocks) or 'none'})")
        if not len(tables[name]):
            raise InputError(f"{path}: no particles (the table {name!r} has no rows)")
        optics = tables.get("optics")
        others = {k: v for k, v in blocks.items() if k not in (name, "optics")}
        return cls(tables[name].copy(), None if optics is None else optics.copy(), others, path.parent, path)

    @classmethod
    def for_stack(cls, stack: str, count: int, acq: Acquisition, box: int) -> "ParticleTable":
        """A RELION 3.1 table of ``count`` images of ``stack`` (one optics group from ``acq``)."""
        import pandas as pd

        optics = pd.DataFrame(
            {
                "rlnOpticsGroupName": ["opticsGroup1"],
                "rlnOpticsGroup": [1],
                "rlnMicrographOriginalPixelSize": [acq.pixel_size],
                "rlnVoltage": [acq.voltage_kv],
                "rlnSphericalAberration": [acq.cs_mm],
                "rlnAmplitudeContrast": [acq.amplitude_contrast],
                "rlnImagePixelSize": [acq.pixel_size],
                "rlnImageSize": [box],
                "rlnImageDimensionality": [2],
            }
        )
        particles = pd.DataFrame(
            {
                "rlnImageName": [f"{i + 1:06d}@{stack}" for i in range(count)],
                "rlnOpticsGroup": np.ones(count, dtype=int),
            }
        )
        return cls(particles, optics)

    # --- geometry -----------------------------------------------------------------------------
    def set_geometry(self, rotations: np.ndarray, shifts_px: np.ndarray, defocus: np.ndarray) -> None:
        """Write orientations (A matrices), the particles' offsets from the box centre ``shifts_px``
        [px] (as RELION origins: minus the offset, in Å) and defocus (U, V [Å], angle [deg])."""
        angles = np.array([matrix_to_euler(r) for r in rotations]).reshape(-1, 3)
        px = self.pixel_sizes()
        p = self.particles
        p["rlnAngleRot"], p["rlnAngleTilt"], p["rlnAnglePsi"] = angles.T
        p["rlnOriginXAngst"], p["rlnOriginYAngst"] = -shifts_px[:, 0] * px, -shifts_px[:, 1] * px
        p["rlnDefocusU"], p["rlnDefocusV"], p["rlnDefocusAngle"] = np.asarray(defocus, float).T

    def _optics_value(self, column: str) -> np.ndarray | None:
        """Per-particle values of an optics column (from the optics block, else the particle rows)."""
        if column in self.particles.columns:
            return self.particles[column].to_numpy(float)
        if self.optics is None or column not in self.optics.columns:
            return None
        groups = dict(zip(self.optics["rlnOpticsGroup"].astype(int), self.optics[column].astype(float)))
        ids = (
            self.particles["rlnOpticsGroup"].astype(int)
            if "rlnOpticsGroup" in self.particles.columns
            else np.ones(len(self), int)
        )
        try:
            return np.array([groups[g] for g in ids], float)
        except KeyError as exc:
            raise InputError(
                f"{self.path}: particle in optics group {exc} that the optics block does not define"
            ) from None

    def pixel_sizes(self) -> np.ndarray:
        for column in ("rlnImagePixelSize", "rlnPixelSize"):
            values = self._optics_value(column)
            if values is not None:
                return values
        if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(self.particles.columns):
            return (
                self.particles["rlnDetectorPixelSize"].to_numpy(float)
                * 1e4
                / self.particles["rlnMagnification"].to_numpy(float)
            )
        raise InputError(f"{self.path}: no pixel size (rlnImagePixelSize in optics, or rlnPixelSize)")

    def has_orientations(self) -> bool:
        return {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"} <= set(self.particles.columns)

    def rotations(self) -> np.ndarray:
        if not self.has_orientations():
            raise InputError(f"{self.path}: particles have no orientations (rlnAngleRot/Tilt/Psi)")
        p = self.particles
        return np.stack(
            [
                euler_to_matrix(r, t, s)
                for r, t, s in zip(
                    p["rlnAngleRot"].astype(float), p["rlnAngleTilt"].astype(float), p["rlnAnglePsi"].astype(float)
                )
            ]
        )

    def shifts_px(self) -> np.ndarray:
        """Each particle's offset (x, y) from the box centre [px]: minus RELION's origin."""
        p = self.particles
        if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(p.columns):
            return (
                -np.stack([p["rlnOriginXAngst"].to_numpy(float), p["rlnOriginYAngst"].to_numpy(float)], 1)
                / self.pixel_sizes()[:, None]
            )
        if {"rlnOriginX", "rlnOriginY"} <= set(p.columns):
            return -np.stack([p["rlnOriginX"].to_numpy(float), p["rlnOriginY"].to_numpy(float)], 1)
        return np.zeros((len(self), 2))

    def defocus(self) -> np.ndarray:
        p = self.particles
        if not {"rlnDefocusU", "rlnDefocusV"} <= set(p.columns):
            raise InputError(f"{self.path}: particles have no CTF (rlnDefocusU/V)")
        angle = p["rlnDefocusAngle"].to_numpy(float) if "rlnDefocusAngle" in p.columns else np.zeros(len(self))
        return np.stack([p["rlnDefocusU"].to_numpy(float), p["rlnDefocusV"].to_numpy(float), angle], 1)

    def acquisition(self, fallback: Acquisition | None = None) -> Acquisition:
        """The optics of the first particle as an :class:`Acquisition` (fields absent: ``fallback``'s)."""
        base = (fallback or Acquisition()).to_dict()
        for column, name in OPTICS_COLUMNS.items():
            values = self.pixel_sizes() if name == "pixel_size" else self._optics_value(column)
            if values is not None and len(values):
                base[name] = float(values[0])
        return Acquisition(**base)

    # --- images -------------------------------------------------------------------------------
    def images(self) -> tuple[np.ndarray, float]:
        """Every particle's image (N, box, box), in table order, each stack read once; and the
        first stack's pixel size [Å]. InputError naming the STAR file for an index past a stack's end."""
        self.check_images()
        cache: dict[str, tuple[np.ndarray, float]] = {}
        out = []
        for index, stack in self.image_refs():
            if stack not in cache:
                cache[stack] = read_stack(self.resolve(stack))
            out.append(cache[stack][0][index])
        return np.stack(out), next(iter(cache.values()))[1]

    def check_images(self) -> None:
        """Every ``rlnImageName`` names an image its stack holds (1-based: 1..N), checked from the
        stacks' headers before any image is read or any output made; InputError naming the STAR
        file, the row and the stack otherwise."""
        from ..io import check_mrc_header

        counts: dict[str, int] = {}
        for row, (index, stack) in enumerate(self.image_refs(), start=1):
            if stack not in counts:
                path = self.resolve(stack)
                if not path.is_file():
                    raise InputError(
                        f"{self.path}: row {row} names the stack {stack}, which is not found "
                        f"(looked in {self.folder} and the current folder)"
                    )
                counts[stack] = check_mrc_header(path)[0][0]
            if index >= counts[stack]:
                raise InputError(
                    f"{self.path}: row {row} refers to image {index + 1} of {stack}, which holds {counts[stack]}"
                )

    def image_refs(self) -> list[tuple[int, str]]:
        """(index from 0, stack path as written) of every particle; InputError for an index that
        is not a positive integer (RELION's indices start at 1: ``0@`` or ``-3@`` name no image)."""
        refs = []
        for row, name in enumerate(self.particles["rlnImageName"].astype(str), start=1):
            index, sep, stack = name.partition("@")
            if not sep:
                refs.append((0, name))
                continue
            try:
                number = int(index)
            except ValueError:
                raise InputError(f"{self.path}: row {row}: image name {name!r} is not INDEX@STACK") from None
            if number < 1:
                raise InputError(f"{self.path}: row {row}: image name {name!r}: image indices start at 1")
            refs.append((number - 1, stack))
        return refs

    def resolve(self, stack: str) -> Path:
        """A stack path as written, resolved: absolute, else relative to the STAR file's folder,
        else to the current folder (RELION writes paths relative to its project folder)."""
        p = Path(stack)
        if p.is_absolute() or p.exists() and not (self.folder / p).exists():
            return p
        return self.folder / p if (self.folder / p).exists() else p

    def with_images(self, names: list[str]) -> "ParticleTable":
        """A copy whose ``rlnImageName`` column is ``names`` (every other column kept)."""
        out = ParticleTable(
            self.particles.copy(),
            None if self.optics is None else self.optics.copy(),
            dict(self.blocks),
            self.folder,
            self.path,
        )
        out.particles["rlnImageName"] = names
        return out

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically (RELION 3.1 layout when there is an optics block)."""
        import starfile

        blocks = {}
        if self.optics is not None:
            blocks["optics"] = self.optics
        blocks["particles"] = self.particles
        blocks.update(self.blocks)
        path = Path(path)
        with atomic_write(path) as tmp:
            starfile.write(blocks, tmp, float_format="%.6f")
        return path


def read_stack(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """A particle stack (N, box, box) and its pixel size [Å]; InputError naming the file when the
    images are not square."""
    images, pixel = read_mrc(path, allow_stack=True)
    if images.ndim == 2:
        images = images[None]
    if images.shape[1] != images.shape[2]:
        raise InputError(f"{path}: particle images must be square, got {images.shape[2]} x {images.shape[1]} px")
    return images, pixel
