"""Data consistency with the real micrographs: a training term that needs no ground truth.

A denoiser trained only on simulated pairs learns the simulation's prior: one structure, in
random views, on flat ice. Where the real data's noise is strong in the particle band (on
EMPIAR-10028 the real background holds 2-3x the white-noise floor between 0.05 and 0.2 /px), the
fine model leans on that prior and paints textbook particles on a flat field, erasing what does
not look like its structure (low-pass agreement with the raw micrograph 0.81 against the general
model's 0.96, DoG picking AP below raw). The term below ties the network to the data at the
scale where the raw micrographs are reliable: on random crops of the real micrographs,

    L = mean( (G_sigma * f(r) - G_sigma * r)^2 ),   sigma = particle radius / 3 [px],

i.e. the denoised real micrograph, low-passed at the particle scale, must equal the raw one
low-passed the same way (the measure of :func:`nt2c_core.selection.lowpass_agreement`). It adds
nothing about finer detail, which the simulated pairs teach; it forbids moving
particle-sized mass around. The fine stage adds ``consistency * L`` to the pairs' MSE (``TrainConfig.consistency``).

Measured on EMPIAR-10028 (fine stage with the real noise patches, 500 steps from the same coarse
model; eq. 5 SNR dB / DoG AP / agreement): without the term 37.10 / 0.639 / 0.810; weight 1
18.31 / 0.670 / 0.982 in ``nt2c run`` (which then chooses the fine model), 16.53 / 0.674 / 0.985
in a scratch loop; weight 10: 8.34 / 0.676 / 0.997 (general model 10.06 / 0.668 / 0.959, raw
2.09 / 0.678). Its cost on the demo's simulated data, against the truth: fine 29.44 -> 29.07 dB
(GAN noise), 29.47 -> 29.14 dB (patches): the demo's correlated detector noise at the particle
scale is kept with the data. Removing each crop's plane before comparing (uneven ice) did not
help there (29.01 dB).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .normalization import standardize, stats
from .settings import PIXEL_MATCH

log = logging.getLogger(__name__)

MAX_MICROGRAPHS = 8  # real micrographs held in memory for the term (spread over the data set)


def gaussian_kernel(sigma: float, limit: int) -> torch.Tensor:
    """Normalized 1-D Gaussian of ``sigma`` px, cut at 3 sigma and at ``limit`` px each side."""
    radius = max(1, min(int(3 * sigma) + 1, limit))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def lowpass(batch: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) with reflected edges."""
    r = (len(kernel) - 1) // 2
    k = kernel.to(batch.device, batch.dtype)
    out = nn.functional.conv2d(nn.functional.pad(batch, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return nn.functional.conv2d(nn.functional.pad(out, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


class RealConsistency:
    """``term(network, step)`` -> the weighted loss L above on a batch of real crops; the crops of
    a step depend only on (seed, step), so a resumed training sees the same ones.

    ``micrographs``: standardized real micrographs (as :mod:`nt2c_core.normalization` gives the
    network); ``radius_px``: the particle radius [px]; ``weight``: the term's weight against the
    pairs' MSE; ``batch`` crops of ``crop`` px per step."""

    def __init__(self, micrographs: Sequence[np.ndarray], radius_px: float, weight: float, batch: int = 4,
                 crop: int = 128, seed: int = 0):
        small = [m.shape for m in micrographs if min(m.shape) < crop]
        if not micrographs or small:
            raise InputError(f"data consistency: need real micrographs of at least {crop} px (got {small or 'none'})")
        self.micrographs = list(micrographs)
        self.sigma = max(radius_px / 3.0, 1.0)
        self.kernel = gaussian_kernel(self.sigma, crop // 2 - 1)
        self.weight, self.batch, self.crop, self.seed = float(weight), int(batch), int(crop), int(seed)

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike], pixel_size: float, radius_px: float, weight: float,
                   batch: int | None = None, crop: int | None = None, seed: int = 0) -> "RealConsistency":
        """Up to :data:`MAX_MICROGRAPHS` of ``paths`` (spread evenly), read and standardized;
        each must have the training pairs' ``pixel_size`` [Å/px] (InputError naming the file).
        ``crop`` None: :func:`crop_for` the radius, at most the smallest micrograph's side;
        ``batch`` None: :func:`batch_for` the crop."""
        from .io import read_mrc

        paths = [Path(p) for p in paths]
        if not paths:
            raise InputError("data consistency: no real micrographs given")
        chosen = [paths[int(i)] for i in np.unique(np.linspace(0, len(paths) - 1, MAX_MICROGRAPHS).round())]
        images = []
        for path in chosen:
            image, pixel = read_mrc(path)
            if pixel > 0 and abs(pixel / pixel_size - 1) > PIXEL_MATCH:
                raise InputError(f"{path}: pixel size {pixel:g} Å differs from the training pairs' {pixel_size:g} Å; "
                                 "simulate the pairs at the micrographs' pixel size")
            images.append(standardize(image, *stats(image)))
        if crop is None:
            crop = max(32, min(crop_for(radius_px), min(min(m.shape) for m in images) // 32 * 32))
        term = cls(images, radius_px, weight, batch_for(crop) if batch is None else batch, crop, seed)
        log.info(f"data consistency with {len(images)} real micrograph(s), weight {weight:g}, "
                 f"low-pass sigma {term.sigma:.1f} px, {term.batch} crop(s) of {crop} px per step")
        return term

    def crops(self, step: int) -> np.ndarray:
        """(batch, 1, crop, crop) random crops with a random dihedral transform for ``step``."""
        rng = np.random.default_rng([self.seed, 7919, step])
        out = []
        for _ in range(self.batch):
            image = self.micrographs[int(rng.integers(len(self.micrographs)))]
            y0 = int(rng.integers(image.shape[0] - self.crop + 1))
            x0 = int(rng.integers(image.shape[1] - self.crop + 1))
            tile = np.rot90(image[y0:y0 + self.crop, x0:x0 + self.crop], int(rng.integers(4)))
            out.append(tile[:, ::-1] if rng.integers(2) else tile)
        return np.stack(out)[:, None].copy()

    def __call__(self, network: nn.Module, step: int) -> torch.Tensor:
        device = next(network.parameters()).device
        r = torch.from_numpy(self.crops(step)).to(device, memory_format=torch.channels_last)
        out = network(r).float()
        return self.weight * nn.functional.mse_loss(lowpass(out, self.kernel), lowpass(r, self.kernel))


def batch_for(crop: int) -> int:
    """Real crops per step: 4 of up to 128 px (smaller crops: still 4), fewer of larger crops so a
    step compares about as many pixels (at least one crop): 2 of 192 px, 1 from 256 px. Four
    384-px crops made the real EPU run's fine stage 3.6x slower than one (691 s against 192 s,
    the same model within 0.02 dB held-out and 0.0003 agreement, 2026-12-03)."""
    return max(1, min(4, round(4 * (128 / crop) ** 2)))


def crop_for(radius_px: float) -> int:
    """Side [px] of the term's real crops: 8 low-pass sigmas (8 radius / 3), so the Gaussian is
    not cut by the crop, a multiple of 32 between 128 and 512. A 128-px crop (the former fixed
    size) under a sigma of 45 px (20S proteasome at 0.67 Å/px) leaves little more than the crop's
    mean to compare, and the fine model painted there."""
    return int(min(max(128, -(-8 * max(radius_px / 3.0, 1.0) // 32) * 32), 512))


def particle_radius_px(provenance: dict) -> float | None:
    """The largest particle radius [px] of the structures simulated pairs were made from, from
    their provenance (:func:`nt2c_core.pairs.provenance`: ``structures[].radius_A`` and the
    acquisition's pixel size); None if unknown."""
    try:
        radii = [float(s["radius_A"]) for s in provenance.get("structures", [])]
        pixel = float(provenance["acquisition"]["pixel_size"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(radii) / pixel if radii and pixel > 0 else None
