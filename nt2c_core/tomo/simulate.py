"""Simulated tomograms with ground truth: particles from atomic models in an ice slab, a single-axis
tilt series with CTF, dose split over the tilts, detector and shot noise, then weighted
back-projection (:mod:`.reconstruct`).

Image formation per tilt t (weak-phase object, as :mod:`nt2c_core.simulate.micrograph`): each
particle's projected potential is computed from its atoms rotated by R_tilt(t) R_particle
(:class:`nt2c_core.simulate.potential.Projector`, exact for Gaussian atoms), pasted at its tilted
position x' = x cos t + z sin t, multiplied by 2 sigma CTF (one defocus per tilt: the defocus
gradient across the tilted field is neglected, at most +-1 µm at 60° over 128 px of 8 Å), plus an
amorphous-ice phase texture of thickness ice / cos t, drawn anew for every tilt (so the ice acts
as structured noise rather than a 3-D object), then Poisson counts at dose / n_tilts.

Outputs (all (z, y, x) float32 volumes, contrast units): ``noisy`` = WBP of the noisy tilts;
``clean`` = WBP of the noiseless tilts (the ground truth a denoiser can reach: same missing wedge
and CTF); ``even`` / ``odd`` = WBP of the even / odd tilts (independent noise, for even/odd FSC);
``oversmoothed`` = WBP of the noisy tilts low-passed by a Gaussian of ``oversmooth_sigma`` px.
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
from ..io import ensure_writable_dir, write_json, write_mrc
from ..logs import progress as progress_bar
from ..logs import staged
from ..settings import TomoSimulationConfig
from ..simulate.detector import apply_detector, ice_phase_ft
from ..simulate.geometry import random_rotations
from ..simulate.micrograph import _paste
from ..simulate.optics import CTFGrid, interaction_constant
from ..simulate.potential import next_fast_size, projectors_for
from ..simulate.structure import Structure, load_structure
from .reconstruct import backproject

VOLUMES = ("noisy", "clean", "even", "odd", "oversmoothed")  # files written by simulate_tomogram_files
PAD = 32  # tilt-image margin [px] against CTF wrap-around


@dataclass
class SimulatedTomogram:
    """Reconstructed volumes (z, y, x) of one simulated specimen, its tilt series and particles."""

    noisy: np.ndarray
    clean: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    oversmoothed: np.ndarray
    tilts: np.ndarray
    angles: list[float]
    particles: list[dict]


def tilt_rotation(angle_deg: float) -> np.ndarray:
    """Rotation about y taking (x, z) to (x cos t + z sin t, -x sin t + z cos t)."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def place_particles_3d(
    structures: Sequence[Structure], config: TomoSimulationConfig, rng: np.random.Generator
) -> list[dict]:
    """Non-overlapping particle centres (px about the volume centre) inside the ice slab."""
    px = config.acquisition.pixel_size
    width, height = config.size
    kinds = rng.integers(0, len(structures), config.particles)
    placed: list[dict] = []
    for kind in kinds:
        radius = structures[kind].radius / px
        room = (width / 2 - radius, height / 2 - radius, max(0.0, config.ice_thickness / px / 2 - radius))
        if room[0] <= 0 or room[1] <= 0:
            raise InputError(f"tomogram {width} x {height} px is too small for a particle of radius {radius:.0f} px")
        for _ in range(200):
            centre = rng.uniform(-np.array(room), np.array(room))
            if all(np.linalg.norm(centre - p["centre"]) >= radius + p["radius"] for p in placed):
                placed.append({"kind": int(kind), "centre": centre, "radius": radius})
                break
    rotations = random_rotations(len(placed), rng)
    for p, rot in zip(placed, rotations):
        p["rotation"] = rot
    return placed


class TomogramSimulator:
    """Simulates the tilt series and reconstructions of ``structures`` (projectors built once)."""

    def __init__(self, structures: list[Structure], config: TomoSimulationConfig, device="cpu"):
        self.config = config.validate()
        self.structures = structures
        self.device = torch.device(device)
        acq = config.acquisition
        self.projectors = projectors_for(structures, acq, self.device)

    def simulate(self, progress: bool = True) -> SimulatedTomogram:
        cfg, acq = self.config, self.config.acquisition
        rng = np.random.default_rng([cfg.seed, 31])
        particles = place_particles_3d(self.structures, cfg, rng)
        angles = cfg.tilt_angles()
        per_tilt = acq.__class__(**{**acq.to_dict(), "dose": acq.dose / len(angles)})
        width, height = cfg.size
        shape = (next_fast_size(height + 2 * PAD), next_fast_size(width + 2 * PAD))
        crop = (slice(PAD, PAD + height), slice(PAD, PAD + width))
        sigma = interaction_constant(acq.voltage)
        df = cfg.defocus_um * 1e4
        ctf_grid = CTFGrid(shape, acq, envelope_defocus=df, device=self.device)
        transfer = 2.0 * sigma * ctf_grid(df)
        clean, noisy = [], []
        for i, angle in enumerate(progress_bar(angles, desc="tilt series", unit="tilt", disable=not progress)):
            tilt = tilt_rotation(angle)
            field_ = torch.zeros(shape, dtype=torch.float32, device=self.device)
            for p in particles:
                x, y, z = p["centre"]
                xt = x * tilt[0, 0] + z * tilt[0, 2] + (width - 1) / 2 + PAD
                yt = y + (height - 1) / 2 + PAD
                ix, iy = round(xt), round(yt)
                box = self.projectors[p["kind"]].project(tilt @ p["rotation"], (xt - ix, yt - iy))
                _paste(field_, box, iy, ix)
            contrast = torch.fft.irfft2(torch.fft.rfft2(field_) * transfer, s=shape)[crop]
            noise_rng = np.random.default_rng([cfg.seed, 32, i])
            ice_ft = ice_phase_ft(
                shape, acq.pixel_size, cfg.ice_thickness / math.cos(math.radians(angle)), noise_rng, self.device
            ) * (2.0 * ctf_grid(df))
            ice = torch.fft.irfft2(ice_ft, s=shape)[crop]
            counts = apply_detector(1.0 + contrast + ice, per_tilt, noise_rng)
            noisy.append((counts / (per_tilt.dose * acq.pixel_size**2) - 1.0).cpu().numpy())
            clean.append(contrast.cpu().numpy())
        noisy_t, clean_t = np.stack(noisy).astype(np.float32), np.stack(clean).astype(np.float32)
        thick = cfg.thickness
        return SimulatedTomogram(
            noisy=backproject(noisy_t, angles, thick),
            clean=backproject(clean_t, angles, thick),
            even=backproject(noisy_t[0::2], angles[0::2], thick),
            odd=backproject(noisy_t[1::2], angles[1::2], thick),
            oversmoothed=backproject(noisy_t, angles, thick, lowpass_sigma=cfg.oversmooth_sigma),
            tilts=noisy_t,
            angles=angles,
            particles=[
                {
                    "kind": p["kind"],
                    "x": float(p["centre"][0] + (width - 1) / 2),
                    "y": float(p["centre"][1] + (height - 1) / 2),
                    "z": float(p["centre"][2] + (thick - 1) / 2),
                    "radius_px": float(p["radius"]),
                }
                for p in particles
            ],
        )


@staged("simulate-tomo")
def simulate_tomogram_files(
    structures: Sequence[str | os.PathLike],
    config: TomoSimulationConfig,
    out_dir: str | os.PathLike,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Path]:
    """Simulate one tomogram of ``structures`` and write ``noisy.mrc`` (the tomogram), ``clean.mrc``,
    ``even.mrc``, ``odd.mrc``, ``oversmoothed.mrc``, ``tilts.mrcs``, ``tilts.tlt`` and ``params.json``
    (config, structures, particle positions) into ``out_dir``. Returns {name: path}."""
    config.validate()
    models = [load_structure(p) for p in structures]
    out = ensure_writable_dir(out_dir)
    tomo = TomogramSimulator(models, config, device).simulate(progress)
    voxel = config.acquisition.pixel_size
    paths = {
        name: write_mrc(out / f"{name}.mrc", getattr(tomo, name), voxel, [f"nt2c {__version__} simulate-tomo {name}"])
        for name in VOLUMES
    }
    paths["tilts"] = write_mrc(out / "tilts.mrcs", tomo.tilts, voxel)
    (out / "tilts.tlt").write_text("".join(f"{a:.2f}\n" for a in tomo.angles))
    paths["tlt"] = out / "tilts.tlt"
    paths["params"] = write_json(
        out / "params.json",
        {
            "nt2c_version": __version__,
            "config": config.to_dict(),
            "structures": [{"name": m.name, "path": m.path, "radius_A": round(m.radius, 2)} for m in models],
            "particles": tomo.particles,
        },
    )
    return paths
