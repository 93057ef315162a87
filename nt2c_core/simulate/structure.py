"""Atomic models: read PDB/mmCIF (gzipped or not) with gemmi, build the biological assembly,
and group atom coordinates by element, centred on the geometric centre (Å)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import gemmi
import numpy as np

from ..errors import InputError

# Average number of hydrogens bonded to each heavy atom in proteins (about 7.8 H per residue);
# used when the model has no explicit hydrogens ("implicit hydrogens").
IMPLICIT_HYDROGENS = {"C": 1.2, "N": 1.0, "O": 0.3, "S": 0.5}


@dataclass
class Structure:
    """One particle species: atom coordinates (Å, centred) grouped by element symbol."""

    name: str
    path: str
    coords: dict[str, np.ndarray] = field(repr=False)
    explicit_hydrogens: bool = False

    @property
    def n_atoms(self) -> int:
        return int(sum(len(c) for c in self.coords.values()))

    @cached_property
    def radius(self) -> float:
        """Largest distance of an atom from the centre, in Å."""
        return float(max(np.sqrt((c**2).sum(1)).max() for c in self.coords.values()))

    def hydrogens_per_atom(self, element: str) -> float:
        """Hydrogens to add to each atom of ``element`` (0 when hydrogens are explicit)."""
        return 0.0 if self.explicit_hydrogens else IMPLICIT_HYDROGENS.get(element, 0.0)


MAX_COORDINATE = 1e5  # Å: |x|, |y|, |z| of a real model stay far below (PDB format holds at most 9999.999)


def load_structure(path: str | os.PathLike, assembly: bool = True) -> Structure:
    """Read an atomic model; build its first biological assembly when it defines one.

    Waters and alternative conformations are removed. Raises :class:`InputError` naming the file
    when it is missing, empty, or cannot be parsed as a structure with atoms.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: structure file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: structure file is empty")
    try:
        st = gemmi.read_structure(str(path))
    except Exception as exc:  # gemmi raises RuntimeError/ValueError/IOError subclasses
        raise InputError(f"{path}: not a readable PDB/mmCIF structure ({exc})") from exc
    if len(st) == 0:
        raise InputError(f"{path}: the structure has no model")
    st.remove_waters()
    st.remove_alternative_conformations()
    model = st[0]
    if assembly and len(st.assemblies) > 0:
        model = gemmi.make_assembly(st.assemblies[0], model, gemmi.HowToNameCopiedChain.AddNumber)
    coords = _coords_by_element(model)
    if not coords:
        raise InputError(f"{path}: no atoms found in the structure")
    for element, xyz in coords.items():
        bad = ~np.isfinite(xyz).all(1)
        if bad.any() or np.abs(xyz).max() > MAX_COORDINATE:
            what = (
                f"{int(bad.sum())} {element} atoms have NaN or infinite coordinates"
                if bad.any()
                else f"{element} atoms have coordinates beyond {MAX_COORDINATE:g} Å"
            )
            raise InputError(f"{path}: {what}; fix the model")
    centre = np.concatenate(list(coords.values())).mean(0)
    coords = {el: (xyz - centre).astype(np.float32) for el, xyz in coords.items()}
    name = path.name.split(".")[0]
    return Structure(name=name, path=str(path), coords=coords, explicit_hydrogens="H" in coords)


def _coords_by_element(model) -> dict[str, np.ndarray]:
    groups: dict[str, list] = {}
    for chain in model:
        for residue in chain:
            for atom in residue:
                el = atom.element.name
                if el in ("X", "D"):
                    el = "H" if el == "D" else el
                if el == "X":
                    continue
                groups.setdefault(el, []).append(atom.pos.tolist())
    return {el: np.asarray(v, dtype=np.float64) for el, v in groups.items()}
