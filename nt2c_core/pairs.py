"""Training pairs: clean/noisy micrographs held in memory, standardized, sampled as random crops.

Sampling is stateless: the crops of step ``s`` come from ``numpy.random.default_rng([seed, s])``,
so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import list_mrcs, read_mrc
from .normalization import standardize, stats


@dataclass
class PairSet:
    """Standardized (noisy, clean) float32 arrays, their names and pixel size (Å), and what
    simulated them (``provenance``: the acquisition and simulation settings that ``nt2c simulate``
    recorded in the folder's params.json; empty when unknown)."""

    noisy: list[np.ndarray]
    clean: list[np.ndarray]
    names: list[str]
    pixel_size: float
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def split(self, val_fraction: float) -> tuple["PairSet", "PairSet"]:
        """(train, validation): the last ceil(fraction * n) micrographs validate (at least one
        when there are two or more; none when there is one)."""
        n_val = int(np.ceil(val_fraction * len(self))) if len(self) > 1 and val_fraction > 0 else 0
        cut = len(self) - n_val

        def part(s: slice) -> "PairSet":
            return PairSet(self.noisy[s], self.clean[s], self.names[s], self.pixel_size, self.provenance)

        return part(slice(0, cut)), part(slice(cut, None))

    def without(self, names: set[str]) -> "PairSet":
        """The pairs whose names are not in ``names``."""
        keep = [i for i, n in enumerate(self.names) if n not in names]
        return PairSet(
            [self.noisy[i] for i in keep],
            [self.clean[i] for i in keep],
            [self.names[i] for i in keep],
            self.pixel_size,
            self.provenance,
        )

    def sample(self, rng: np.random.Generator, batch: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch (batch, 1, crop, crop) of random crops with one of the 8 dihedral transforms,
        the same for input and target."""
        xs, ys = [], []
        for _ in range(batch):
            i = int(rng.integers(len(self)))
            h, w = self.noisy[i].shape
            y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            for src, dst in ((self.noisy[i], xs), (self.clean[i], ys)):
                tile = np.rot90(src[y0 : y0 + crop, x0 : x0 + crop], k)
                dst.append(tile[:, ::-1] if flip else tile)
        return np.stack(xs)[:, None].copy(), np.stack(ys)[:, None].copy()


def pairs_from_arrays(
    noisy: list[np.ndarray], clean: list[np.ndarray], names: list[str] | None = None, pixel_size: float = 1.0
) -> PairSet:
    """Standardize each pair with its noisy micrograph's mean and std."""
    if len(noisy) != len(clean) or not noisy:
        raise InputError("training pairs: need the same, non-zero number of noisy and clean images")
    names = names or [f"pair_{i:04d}" for i in range(len(noisy))]
    out_noisy, out_clean = [], []
    for name, x, y in zip(names, noisy, clean):
        if x.shape != y.shape:
            raise InputError(f"pair {name}: noisy {x.shape} and clean {y.shape} differ in shape")
        mean, std = stats(x)
        out_noisy.append(standardize(x, mean, std))
        out_clean.append(standardize(y, mean, std))
    return PairSet(out_noisy, out_clean, list(names), pixel_size)


def load_pairs(folder: str | os.PathLike) -> PairSet:
    """Pairs from ``folder/noisy/*.mrc`` and ``folder/clean/*.mrc`` matched by file name."""
    folder = Path(folder)
    noisy_dir, clean_dir = folder / "noisy", folder / "clean"
    if not noisy_dir.is_dir() or not clean_dir.is_dir():
        raise InputError(f"{folder}: expected subfolders noisy/ and clean/ (as written by 'nt2c simulate')")
    noisy_files = list_mrcs(noisy_dir)
    missing = [p.name for p in noisy_files if not (clean_dir / p.name).is_file()]
    if missing:
        raise InputError(f"{clean_dir}: no clean micrograph for {', '.join(missing[:5])}")
    if not noisy_files:
        raise InputError(f"{noisy_dir}: no MRC files")
    noisy, clean, pixel = [], [], 0.0
    for path in noisy_files:
        x, pixel = read_mrc(path)
        y, _ = read_mrc(clean_dir / path.name)
        noisy.append(x)
        clean.append(y)
    pairs = pairs_from_arrays(noisy, clean, [p.stem for p in noisy_files], pixel)
    pairs.provenance = provenance(folder)
    return pairs


def _record(folder: str | os.PathLike) -> dict:
    """A pairs folder's ``params.json`` as ``nt2c simulate`` wrote it; empty when unreadable."""
    try:
        record = json.loads((Path(folder) / "params.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def film_names(folder: str | os.PathLike) -> set[str]:
    """Names of the micrographs of a pairs folder that ``nt2c simulate`` took near a carbon rim
    (``params.json``'s ``carbon_edges``; empty when there is no readable record)."""
    edges = _record(folder).get("carbon_edges", {})
    return set(edges) if isinstance(edges, dict) else set()


def provenance(folder: str | os.PathLike) -> dict:
    """What ``nt2c simulate`` recorded in a pairs folder (``params.json``): ``acquisition``,
    ``simulation`` (the other settings) and ``structures`` (name and radius in Å of each); empty
    when there is no readable record."""
    record = _record(folder)
    if not record:
        return {}
    try:
        config = record.get("config", {})
        structures = [{"name": s.get("name"), "radius_A": s.get("radius_A")} for s in record.get("structures", [])]
    except AttributeError:
        return {}
    return {
        "acquisition": config.get("acquisition"),
        "simulation": {k: v for k, v in config.items() if k != "acquisition"},
        "structures": structures,
    }
