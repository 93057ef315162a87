"""The general denoiser: one U-Net trained on simulation spanning many acquisitions, shipped in the
package, so a user can denoise with no training at all (SaID's point; Topaz's general model is
used the same way).

The recipe (:class:`GeneralRecipe`) draws ``configs`` random acquisitions: structure, pixel size
(0.6-2 Å/px), dose (20-60 e/Å²), defocus (0.5-3.5 µm), detector (K2, K3, Falcon 4), voltage
(200/300 kV), ice thickness (100-600 Å) and particle crowding; each gives ``per_config`` small
micrographs. The pairs are cached in ``WORK/pairs.npz`` and training checkpoints in
``WORK/general.pt.ckpt``, so a stopped run continues. :func:`export_half` writes the shipped
half-precision copy. ``nt2c train-general`` reruns the recipe (larger on a GPU).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .data import GENERAL_MODEL
from .errors import InputError
from .io import atomic_write
from .logs import progress as progress_bar
from .logs import staged
from .models.store import FORMAT, FORMAT_VERSION, read_model_file
from .pairs import PairSet, pairs_from_arrays
from .settings import DETECTOR_NAMES, GeneralRecipe  # noqa: F401 (re-exported)
from .simulate import Acquisition, SimulationConfig
from .simulate.micrograph import MicrographSimulator
from .simulate.structure import load_structure
from .training import TrainResult, train_denoiser


def general_model_path() -> Path:
    """The shipped general model; a clear error when this installation lacks it."""
    if not GENERAL_MODEL.is_file():
        raise InputError(
            f"{GENERAL_MODEL}: the general model is not installed; pass a model file "
            "(or train one with 'nt2c train-general')"
        )
    return GENERAL_MODEL


def draw_config(recipe: GeneralRecipe, index: int) -> tuple[int, SimulationConfig]:
    """(structure index, simulation settings) of the recipe's acquisition number ``index``."""
    rng = np.random.default_rng([recipe.seed, index])
    kind = int(rng.integers(len(recipe.structures)))
    acq = Acquisition(
        voltage_kv=float(rng.choice(recipe.voltages_kv)),
        pixel_size=float(rng.uniform(*recipe.pixel_size_A)),
        dose=float(rng.uniform(*recipe.dose_e_per_A2)),
        detector=str(rng.choice(recipe.detectors)),
    )
    return kind, SimulationConfig(
        acq,
        defocus_um=recipe.defocus_um,
        astigmatism_um=float(rng.uniform(0, 0.1)),
        ice_thickness=float(rng.uniform(*recipe.ice_thickness_A)),
        size=(recipe.size, recipe.size),
        particles=0,
        count=recipe.per_config,
        seed=int(rng.integers(2**31)),
        library_size=0,
        pad=64,
    )


def simulate_general_pairs(
    recipe: GeneralRecipe, cache: str | os.PathLike | None = None, progress: bool = True
) -> PairSet:
    """Simulate (or load from ``cache``) the recipe's clean/noisy pairs, standardized."""
    if cache is not None and Path(cache).exists():
        data = np.load(cache)
        return pairs_from_arrays(list(data["noisy"]), list(data["clean"]), list(data["names"]))
    structures = [load_structure(p) for p in recipe.structures]
    noisy, clean, names = [], [], []
    for index in progress_bar(range(recipe.configs), desc="general data", unit="config", disable=not progress):
        kind, config = draw_config(recipe, index)
        structure = structures[kind]
        rng = np.random.default_rng([recipe.seed, index, 1])
        field_area = (recipe.size * config.acquisition.pixel_size) ** 2
        config.particles = max(1, int(rng.uniform(*recipe.coverage) * field_area / (math.pi * structure.radius**2)))
        simulator = MicrographSimulator([structure], config)
        for j in range(config.count):
            mic = simulator.simulate(j)
            noisy.append(mic.noisy)
            clean.append(mic.clean)
            names.append(f"c{index:03d}_{j}")
    if cache is not None:
        with atomic_write(Path(cache)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, noisy=np.stack(noisy), clean=np.stack(clean), names=np.array(names))
    return pairs_from_arrays(noisy, clean, names)


@staged("train-general")
def train_general_model(
    recipe: GeneralRecipe,
    work: str | os.PathLike,
    resume: bool = True,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Simulate the recipe's pairs and train the general model into ``WORK/general.pt``."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    pairs = simulate_general_pairs(recipe, work / "pairs.npz", progress)
    pairs.pixel_size = 0.0  # any pixel size: the model is not tied to one
    metadata = {
        "stage": "general",
        "general": True,
        "recipe": recipe.to_dict(),
        "recipe_command": "nt2c train-general -o WORK",
        "pixel_size": None,
        "pixel_size_range": list(recipe.pixel_size_A),
    }
    return train_denoiser(
        pairs,
        work / "general.pt",
        recipe.train,
        resume=resume,
        device=device,
        progress=progress,
        metadata=metadata,
        stop_after=stop_after,
    )


def export_half(model: str | os.PathLike, out: str | os.PathLike = GENERAL_MODEL) -> Path:
    """Copy a model file with its weights stored in float16 (half the size; loading casts back)."""
    payload = read_model_file(model)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    out = Path(out)
    with atomic_write(out) as tmp:
        torch.save(
            {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": payload["metadata"], "state_dict": state},
            tmp,
        )
    return out
