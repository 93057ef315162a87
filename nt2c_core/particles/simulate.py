"""Simulated particle images with ground truth, for training and judging particle restoration.

Each particle (weak-phase object, as :mod:`nt2c_core.simulate.micrograph`): the projected
potential of the atoms rotated by a uniformly random rotation A (RELION's convention: a map point
r projects to A r), shifted by a random offset, in a box twice the output's (so the CTF's
delocalized signal is kept), times 2 sigma CTF at a defocus drawn uniformly in the range (with
astigmatism), plus an amorphous-ice phase texture, then the detector's counts at the dose; the
central ``box`` is kept. Images are in contrast units (counts / (dose pixel²) - 1), so ``clean``
is the expectation of ``noisy`` over noise and ice: the CTF-modulated projection through the
detector MTF.

With ``noise='patches'`` the simulated noise (noisy - clean) is replaced by the data set's real
background patches (``nt2c extract-noise``), cut to the box and scaled to the simulated noise's
standard deviation: the texture of the real noise at the simulation's SNR.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..io import ensure_writable_dir, read_mrc, write_json, write_mrc
from ..logs import progress as progress_bar
from ..logs import staged
from ..settings import ParticleSimulationConfig
from ..simulate.detector import apply_detector, ice_phase_ft, mtf_filter
from ..simulate.geometry import random_rotations
from ..simulate.optics import CTFGrid, interaction_constant
from ..simulate.potential import Projector
from ..simulate.structure import Structure, load_structure
from .maps import density_map
from .star import ParticleTable


@dataclass
class ParticleSet:
    """Simulated particles: images (N, box, box) in contrast units and their true parameters."""

    noisy: np.ndarray
    clean: np.ndarray
    rotations: np.ndarray  # (N, 3, 3) RELION A matrices
    shifts: np.ndarray  # (N, 2) particle offset from the box centre (x, y) [px]
    defocus: np.ndarray  # (N, 3): defocus U, V [Å], astigmatism angle [deg]
    kinds: np.ndarray  # (N,) index of the structure


def simulate_particles(
    structures: Sequence[Structure],
    config: ParticleSimulationConfig,
    noise_patches: np.ndarray | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> ParticleSet:
    """``config.count`` particles of ``structures`` (drawn uniformly), seeded by ``config.seed``."""
    config.validate()
    if not structures:
        raise InputError("no structure given: pass at least one PDB/mmCIF file")
    if config.noise == "patches" and noise_patches is None:
        raise InputError("--noise patches needs the data set's noise patches (--noise-patches FILE.mrcs)")
    acq, box = config.acquisition, config.box
    big = 2 * box
    dev = torch.device(device)
    for s in structures:
        if 2 * s.radius / acq.pixel_size > big:
            raise InputError(
                f"{s.name}: particle diameter {2 * s.radius / acq.pixel_size:.0f} px is larger than "
                f"twice the box ({big} px at {acq.pixel_size} Å/px); choose a larger --box"
            )
    projectors = [Projector(s, big, acq.pixel_size, acq.b_factor, dev) for s in structures]
    rng = np.random.default_rng([config.seed, 17])
    n = config.count
    kinds = rng.integers(0, len(structures), n)
    rotations = random_rotations(n, rng)
    shifts = rng.uniform(-config.max_shift, config.max_shift, (n, 2)) if config.max_shift > 0 else np.zeros((n, 2))
    lo, hi = config.defocus_range_um
    mean_df = rng.uniform(lo, hi, n) * 1e4
    half = rng.uniform(0, config.astigmatism_um, n) * 1e4
    angles = rng.uniform(0, 180, n)
    defocus = np.stack([mean_df + half, mean_df - half, angles], 1)
    sigma = interaction_constant(acq.voltage)
    ctf_grid = CTFGrid((big, big), acq, envelope_defocus=float(np.mean(mean_df)), device=dev)
    crop = slice(big // 2 - box // 2, big // 2 - box // 2 + box)
    noisy = np.empty((n, box, box), np.float32)
    clean = np.empty((n, box, box), np.float32)
    for i in progress_bar(range(n), desc="particles", unit="particle", disable=not progress):
        noise_rng = np.random.default_rng([config.seed, 18, i])
        transfer = ctf_grid(float(defocus[i, 0]), float(defocus[i, 1]), math.radians(defocus[i, 2]))
        contrast_ft = projectors[kinds[i]].project_ft(rotations[i], tuple(shifts[i])) * (2.0 * sigma * transfer)
        ice_ft = ice_phase_ft((big, big), acq.pixel_size, config.ice_thickness, noise_rng, dev) * (2.0 * transfer)
        contrast = torch.fft.irfft2(contrast_ft, s=(big, big))
        ice = torch.fft.irfft2(ice_ft, s=(big, big))
        counts = apply_detector(1.0 + contrast + ice, acq, noise_rng)
        image = counts / (acq.dose * acq.pixel_size**2) - 1.0
        truth = torch.fft.irfft2(mtf_filter(contrast_ft, (big, big), acq.detector, acq.image_filter), s=(big, big))
        noisy[i] = image[crop, crop].cpu().numpy()
        clean[i] = truth[crop, crop].cpu().numpy()
    if config.noise == "patches":
        noisy = clean + real_noise(noise_patches, noisy - clean, np.random.default_rng([config.seed, 19]))
    return ParticleSet(noisy, clean, rotations, shifts, defocus, kinds)


def real_noise(patches: np.ndarray, simulated: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One real noise patch per particle (random patch, random crop of the box, random flips),
    mean removed, scaled to the standard deviation of that particle's ``simulated`` noise."""
    patches = np.asarray(patches, np.float32)
    n, box = simulated.shape[0], simulated.shape[-1]
    if patches.ndim != 3 or len(patches) < 2:
        raise InputError(f"noise patches: need a stack of at least 2 patches, got shape {patches.shape}")
    if min(patches.shape[1:]) < box:
        raise InputError(
            f"noise patches of {patches.shape[2]} x {patches.shape[1]} px are smaller than the box "
            f"({box} px); extract larger patches or simulate a smaller box"
        )
    out = np.empty_like(simulated)
    for i in range(n):
        p = patches[rng.integers(len(patches))]
        y, x = rng.integers(0, p.shape[0] - box + 1), rng.integers(0, p.shape[1] - box + 1)
        tile = p[y : y + box, x : x + box]
        if rng.random() < 0.5:
            tile = tile[::-1]
        if rng.random() < 0.5:
            tile = tile[:, ::-1]
        tile = tile - tile.mean()
        out[i] = tile * (simulated[i].std() / max(float(tile.std()), 1e-12))
    return out


@staged("simulate-particles")
def simulate_particle_files(
    structures: Sequence[str | os.PathLike],
    config: ParticleSimulationConfig,
    out_dir: str | os.PathLike,
    noise_patches: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Path]:
    """Simulate particles of ``structures`` and write into ``out_dir``: ``particles.mrcs`` (noisy),
    ``clean.mrcs`` (ground truth), both with ``config.contrast`` (white by default, as RELION
    expects), ``particles.star`` (RELION 3.1: orientations, origins with RELION's sign, CTF, optics), ``map_<i>.mrc``
    (each structure's true potential, box³, for FSC against the truth) and
    ``params.json``. Returns {name: path}."""
    config.validate()
    models = [load_structure(p) for p in structures]
    patches = read_mrc(noise_patches, allow_stack=True)[0] if noise_patches is not None else None
    if patches is not None and patches.ndim == 2:
        patches = patches[None]
    out = ensure_writable_dir(out_dir)
    sim = simulate_particles(models, config, patches, device, progress)
    acq = config.acquisition
    sign = -1.0 if config.contrast == "white" else 1.0  # the arrays hold physical (dark) contrast
    label = [
        f"nt2c {__version__} simulate-particles",
        f"contrast {config.contrast}"
        + (" (protein bright, RELION's convention)" if config.contrast == "white" else " (physical)"),
    ]
    paths = {
        "particles": write_mrc(out / "particles.mrcs", sign * sim.noisy, acq.pixel_size, label),
        "clean": write_mrc(out / "clean.mrcs", sign * sim.clean, acq.pixel_size, label + ["ground truth"]),
    }
    table = ParticleTable.for_stack("particles.mrcs", len(sim.noisy), acq, config.box)
    table.set_geometry(sim.rotations, sim.shifts, sim.defocus)
    table.particles["nt2cStructure"] = [models[k].name for k in sim.kinds]
    paths["star"] = table.write(out / "particles.star")
    for i, m in enumerate(models):
        paths[f"map_{i}"] = write_mrc(
            out / f"map_{i}.mrc",
            density_map(m, config.box, acq.pixel_size, acq.b_factor),
            acq.pixel_size,
            [f"nt2c {__version__} true potential of {m.name}"],
        )
    paths["params"] = write_json(
        out / "params.json",
        {
            "nt2c_version": __version__,
            "config": config.to_dict(),
            "structures": [
                {"name": m.name, "path": m.path, "radius_A": round(m.radius, 2), "map": f"map_{i}.mrc"}
                for i, m in enumerate(models)
            ],
            "noise_patches": str(noise_patches) if noise_patches else None,
        },
    )
    return paths
