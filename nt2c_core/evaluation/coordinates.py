"""Particle coordinate files as pickers write them, read and written one way.

Inside nt2c a pick is a particle centre ``(x, y)`` in pixels of the micrograph's array: ``x`` the
column, ``y`` the row of ``read_mrc(path)[0]``, 0-based (the MRC's own x and y; no flip). On disk:

- RELION coordinate STAR (``*_autopick.star``, ``*_manualpick.star``; RELION 3.0, 3.1, 4 and 5,
  crYOLO's and Topaz's STAR output): ``rlnCoordinateX/Y`` are the same centres, in pixels, with
  RELION's 0-based origin (checked by a test that extracts with ``relion_preprocess`` from a
  file written here, and reads ``relion_autopick --LoG``'s output). Optional columns kept:
  ``rlnAutopickFigureOfMerit`` (the score) and ``rlnClassNumber``.
- EMAN / crYOLO ``.box``: ``x y w h`` per line, ``(x, y)`` the box's lower-left corner in the same
  axes, so the centre is ``(x + w/2, y + h/2)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write

STAR_SUFFIXES = (".star",)
BOX_SUFFIXES = (".box",)


@dataclass
class Picks:
    """Particle centres ``xy`` [px, (N, 2): x = column, y = row, 0-based] with optional scores."""

    xy: np.ndarray
    scores: np.ndarray | None = None
    classes: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.xy)

    def above(self, threshold: float) -> "Picks":
        """The picks whose score is at least ``threshold`` (all when there are no scores)."""
        if self.scores is None:
            return self
        keep = self.scores >= threshold
        return Picks(self.xy[keep], self.scores[keep], None if self.classes is None else self.classes[keep])


def read_coordinates(path: str | os.PathLike) -> Picks:
    """The picks of one micrograph from a RELION/crYOLO/Topaz coordinate STAR or an EMAN/crYOLO
    ``.box`` file (see the module doc for the conventions)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: coordinate file not found")
    if path.suffix.lower() in BOX_SUFFIXES:
        return _read_box(path)
    if path.suffix.lower() in STAR_SUFFIXES:
        return _read_star(path)
    raise InputError(f"{path}: unknown coordinate format (give a RELION/crYOLO .star or an EMAN/crYOLO .box)")


def _read_star(path: Path) -> Picks:
    import starfile

    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises assorted parser errors
        raise InputError(f"{path}: not a readable STAR file ({type(exc).__name__}: {exc})") from None
    tables = [t for t in data.values() if hasattr(t, "columns") and "rlnCoordinateX" in t.columns]
    if not tables:
        if any(hasattr(t, "columns") and len(t.columns) == 0 for t in data.values()) or not data:
            return Picks(np.zeros((0, 2)))
        raise InputError(f"{path}: no rlnCoordinateX/rlnCoordinateY columns: not a coordinate STAR file")
    table = tables[0]
    if "rlnCoordinateY" not in table.columns:
        raise InputError(f"{path}: has rlnCoordinateX but no rlnCoordinateY")
    xy = np.stack([table["rlnCoordinateX"].to_numpy(float), table["rlnCoordinateY"].to_numpy(float)], 1)
    if not np.isfinite(xy).all():
        raise InputError(f"{path}: coordinates that are not numbers (NaN/Inf)")
    scores = table["rlnAutopickFigureOfMerit"].to_numpy(float) if "rlnAutopickFigureOfMerit" in table else None
    classes = table["rlnClassNumber"].to_numpy(int) if "rlnClassNumber" in table else None
    return Picks(xy, scores, classes)


def _read_box(path: Path) -> Picks:
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        try:
            values = [float(v) for v in fields[:4]]
        except ValueError:
            raise InputError(f"{path}, line {number}: {line.strip()!r} is not 'x y width height'") from None
        if len(values) < 4 or not np.isfinite(values).all():
            raise InputError(f"{path}, line {number}: {line.strip()!r} is not 'x y width height'")
        x, y, w, h = values
        rows.append((x + w / 2, y + h / 2))
    return Picks(np.array(rows, float).reshape(-1, 2))


def write_relion_coordinates(path: str | os.PathLike, picks: Picks) -> Path:
    """A RELION coordinate STAR (the layout ``relion_autopick`` writes: one ``data_`` block with
    ``rlnCoordinateX/Y``, then the score and class when known), atomically."""
    import pandas as pd
    import starfile

    table = {"rlnCoordinateX": picks.xy[:, 0].astype(float), "rlnCoordinateY": picks.xy[:, 1].astype(float)}
    if picks.classes is not None:
        table["rlnClassNumber"] = picks.classes.astype(int)
    if picks.scores is not None:
        table["rlnAutopickFigureOfMerit"] = picks.scores.astype(float)
    path = Path(path)
    with atomic_write(path) as tmp:
        starfile.write({"": pd.DataFrame(table)}, tmp, overwrite=True)
    return path


def write_box(path: str | os.PathLike, picks: Picks, box: int) -> Path:
    """An EMAN/crYOLO ``.box`` file: ``x y box box`` with (x, y) the lower-left corner, atomically."""
    if box < 1:
        raise InputError(f"box size {box}: give a positive number of pixels")
    corner = picks.xy - box / 2
    text = "".join(f"{x:.2f}\t{y:.2f}\t{box}\t{box}\n" for x, y in corner)
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path
