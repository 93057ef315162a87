"""Stand-in "experimental" micrographs for the demo and tests: noise from a richer process than
the training simulator, with the ground truth kept aside.

On top of the simulator's physics (CTF, ice texture, shot noise, detector MTF/DQE) they add what
the training simulator does not model (or, for the ice gradient, not by default), so the coarse
denoiser meets unfamiliar noise as it does on real data and noise transfer has something to learn:
- an ice-thickness gradient across each micrograph, +-``ice_gradient`` around the nominal
  thickness (:func:`nt2c_core.simulate.micrograph.through_uneven_ice`: the ice texture's variance
  follows the local thickness, the intensity falls as after an energy filter);
- gain-reference stripes: a per-column gain error of relative std ``stripes``, the same in every
  micrograph of the session (an imperfect gain reference);
- correlated detector/charging noise: an additive Gaussian field with power ~ 1 / f^``exponent``
  and std ``correlated`` x the shot-noise std;
- excess white noise of variance ``excess`` x the shot-noise variance: counting losses, gain
  variation and frame-alignment residuals make real micrographs noisier than the dose and a
  DQE model predict, so a denoiser trained at the simulated noise level under-smooths them.
The truth is the simulator's clean image (flat solvent), as for training pairs, through the same
ice: where the ice is thicker it is darker by the same Beer-Lambert factor as the raw image (the
intensity the energy filter leaves is image content, the same in every exposure of that area, not
noise; the ice texture, shot and detector noise and the gain errors are left out). Without a
gradient the factor is 1. Until 2026-12-03 the truth stayed flat under a gradient, so that a
denoiser keeping the data's +-3 % intensity ramp lost PSNR against it and one trained to remove
low frequencies wholesale gained.

Measured: with 1.5 % stripes and 10 % correlated noise (the defaults) the SSIM rule still finds
about 90 % of the empty tiles; an ice-thickness gradient of even +-30 % leaves ice texture in the
coarse-denoised image wherever the ice departs from the simulated thickness, and the rule then
finds almost no background. That is the limitation the NT2C paper names (uneven backgrounds), so
the gradient is off by default.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..io import ensure_writable_dir, write_json, write_mrc, write_star
from ..logs import progress as progress_bar
from .dataset import STAR_COLUMNS
from .detector import apply_detector
from .micrograph import (
    MicrographSimulator,
    SimulationConfig,
    ice_attenuation,
    noiseless_image,
    thickness_ramp,
    through_uneven_ice,
)
from .structure import load_structure


@dataclass
class ExperimentalNoise:
    """Strengths of the extra noise processes (see the module docstring)."""

    ice_gradient: float = 0.0
    stripes: float = 0.015
    correlated: float = 0.1
    exponent: float = 1.5
    excess: float = 0.0
    session_seed: int = 2024


def _correlated_field(shape: tuple[int, int], exponent: float, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    f = np.hypot(*np.meshgrid(np.fft.rfftfreq(w), np.fft.fftfreq(h)))
    amplitude = 1.0 / np.maximum(f, 1.0 / max(h, w)) ** (exponent / 2)
    amplitude[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * amplitude, s=shape)
    return field / field.std()


def make_experimental_dataset(
    structures: Sequence[str | os.PathLike],
    config: SimulationConfig,
    out_dir: str | os.PathLike,
    noise: ExperimentalNoise | None = None,
    progress: bool = True,
) -> Path:
    """Write ``raw/*.mrc`` (the "experimental" micrographs), ``truth/*.mrc``, ``coords/*.star`` and
    ``experimental.json`` into ``out_dir``; returns the folder."""
    noise = noise or ExperimentalNoise()
    simulator = MicrographSimulator([load_structure(p) for p in structures], config)
    out = ensure_writable_dir(out_dir)
    acq = config.acquisition
    width, height = config.size
    session = np.random.default_rng(noise.session_seed)
    gain = torch.from_numpy((1.0 + noise.stripes * session.standard_normal(width)).astype(np.float32))[None, :]
    mean_counts = acq.dose * acq.pixel_size**2
    for index in progress_bar(range(config.count), desc="experimental", unit="mic", disable=not progress):
        name = f"exp_{index:04d}"
        terms = simulator.image_terms(index)
        rng = terms.noise_rng
        dt = thickness_ramp((height, width), noise.ice_gradient, rng.uniform(0, 2 * np.pi))
        intensity = through_uneven_ice(terms.signal, terms.ice, dt, config.ice_thickness) * gain
        counts = apply_detector(intensity, acq, rng).numpy()
        counts += noise.correlated * np.sqrt(mean_counts) * _correlated_field((height, width), noise.exponent, rng)
        counts += np.sqrt(noise.excess * mean_counts) * rng.standard_normal((height, width))
        attenuation = ice_attenuation(torch.from_numpy(dt).to(terms.signal.device), config.ice_thickness)
        truth = noiseless_image(terms.signal * attenuation, acq).cpu().numpy()
        write_mrc(out / "truth" / f"{name}.mrc", truth.astype(np.float32), acq.pixel_size)
        write_mrc(out / "raw" / f"{name}.mrc", counts.astype(np.float32), acq.pixel_size)
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
            for p in terms.particles
        ]
        write_star(out / "coords" / f"{name}.star", "particles", STAR_COLUMNS, rows)
    write_json(
        out / "experimental.json",
        {"noise": asdict(noise), "config": config.to_dict(), "structures": [str(p) for p in structures]},
    )
    return out
