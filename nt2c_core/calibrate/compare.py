"""How close simulation comes to the micrographs: spectra of real and simulated micrographs,
whole and background, and their mean log distance."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from ..images import centre_crop
from ..simulate import SimulationConfig
from ..spectra import log_distance, radial_power

COMPARE_K_MIN = 0.01  # 1/Å: spectra are compared from 100 Å down to Nyquist


def background_tiles(image: np.ndarray, tile: int = 256, fraction: float = 0.25) -> list[np.ndarray]:
    """The ``fraction`` of ``tile``-px tiles with the lowest low-pass (4x-binned) variance: where
    particles are not (they add low-frequency contrast). A fixed rule, the same for every image."""
    h, w = image.shape
    tiles = [
        image[y : y + tile, x : x + tile] for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)
    ]
    if not tiles:
        return [image]
    variances = [t.reshape(tile // 4, 4, tile // 4, 4).mean(axis=(1, 3)).var() for t in tiles]
    keep = max(1, int(round(fraction * len(tiles))))
    return [tiles[i] for i in np.argsort(variances)[:keep]]


def compare_to_simulation(
    images: Sequence[np.ndarray], config: SimulationConfig, structures: Sequence, size: int = 1024
) -> dict:
    """Radially averaged power spectra of the real micrographs (central crops of ``size`` px) and
    of as many micrographs simulated with ``config`` (same size), for whole micrographs and for
    their background (:func:`background_tiles`, the same rule on both); with the mean absolute
    log10 difference of each pair (see :func:`nt2c_core.spectra.log_distance`). ``structures``:
    loaded atomic models (:func:`nt2c_core.simulate.structure.load_structure`)."""
    from ..simulate.micrograph import MicrographSimulator

    crops = [centre_crop(x, size) for x in images]
    h, w = crops[0].shape
    sim_config = replace(
        config,
        size=(w, h),
        count=len(crops),
        library_size=0,
        particles=_scaled_particles(config, w * h),
        concentration=None,
    )
    simulator = MicrographSimulator(list(structures), sim_config)
    simulated = [simulator.simulate(i).noisy for i in range(len(crops))]
    px = config.acquisition.pixel_size
    out = {}
    for part, pick in (("whole", lambda x: [x]), ("background", background_tiles)):
        real = radial_power([t for x in crops for t in pick(x)], px)
        sim = radial_power([t for x in simulated for t in pick(x)], px)
        out[part] = {
            "k": real[0].tolist(),
            "real": real[1].tolist(),
            "simulated": sim[1].tolist(),
            "log_distance": log_distance(real, sim, k_min=COMPARE_K_MIN),
        }
    return out


def _scaled_particles(config: SimulationConfig, pixels: int) -> int:
    """Particles for a field of ``pixels`` at the crowding ``config`` has for its own size."""
    return int(round(config.particles_per_micrograph() * pixels / (config.size[0] * config.size[1])))
