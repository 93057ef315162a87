"""Data consistency with the real micrographs: a training term that needs no ground truth.

A denoiser trained only on simulated pairs learns the simulation's prior: one structure, in
random views, on flat ice. Where the real data's noise is strong in the particle band (on
EMPIAR-10028 the real background holds 2-3x the white-noise floor between 0.05 and 0.2 /px), the
fine model leans on that prior and paints textbook particles on a flat field, erasing what does
not look like its structure (low-pass agreement with the raw micrograph 0.81 against the general
model's 0.96, DoG picking AP below raw). The term below ties the network to the data at the
scale where the raw micrographs are reliable. On random crops r of the real micrographs, with
G = a Gaussian low-pass of sigma = particle radius / 3 [px] (the measure of
:func:`nt2c_core.selection.lowpass_agreement`), R = G * r, F = G * f(r) and, by default,
Q = G * q(r) for the shipped general model q:

    L = mean( dist(F, [min(R, Q), max(R, Q)])^2 )     (reference "general", the default)
    L = mean( (F - R)^2 )                              (reference "none")

i.e. at the particle scale the fine model's output must lie, pixel by pixel, between the raw
micrograph and the general model's output. Tying it to the raw data alone (reference "none")
also keeps the noise that survives the low-pass (the particle-scale part of correlated detector
noise and ice texture): on the demo's data, whose truth is known, that low-passed noise is 0.0013
of the micrograph's variance, the fine model kept 0.0011 of it, the general model 0.0002, and the
fine model ended 0.3 dB below the coarse model. The band lets the fine model remove as much of it
as the general model does, and no more: it still cannot move particle-sized mass where neither
the data nor the general model put it. It adds nothing about finer detail, which the simulated
pairs teach. The fine stage adds ``consistency * L`` to the pairs' MSE (``TrainConfig.consistency``,
``TrainConfig.consistency_reference``).

Measured (fine stage of the same runs, same coarse model and noise patches; 2026-12-03, CPU):

| term | demo: fine PSNR vs truth | EMPIAR-10028: eq. 5 SNR / DoG AP / agreement |
|---|---|---|
| none, weight 1 (the former default) | 29.04 dB (coarse 29.36) | 24.25 dB / 0.665 / 0.972 |
| band, weight 1 | 29.42 dB | 28.94 dB / 0.668 / 0.943 (below the general model: not handed over) |
| band, weight 10 (default) | 29.38 dB | 24.56 dB / 0.674 / 0.968 |
| a mean-square budget as large as the general model's departure, weight 1 | 29.38 dB | 27.69 dB / 0.665 / 0.951 |

(general model: demo 29.47 dB; EMPIAR 10.06 dB / 0.668 / 0.959; raw 2.09 dB / 0.678 / 1.) With
weight 1 the band is a soft wall the network leans through (a fifth of the general model's
departure lies outside it); weight 10 holds it. Without the term at all the fine model paints
(37.10 dB / 0.639 / 0.810 on EMPIAR-10028).
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

MAX_MICROGRAPHS = 8  # real micrographs held in memory for the term (spread over the data set; with the band, also
#                     the general model's output of each: twice their memory, 1 GB for eight 4096² micrographs)


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
    pairs' MSE; ``batch`` crops of ``crop`` px per step; ``references``: the reference model's
    output of each micrograph in the same units (the band's other side), None = equal to the
    micrographs."""

    def __init__(
        self,
        micrographs: Sequence[np.ndarray],
        radius_px: float,
        weight: float,
        batch: int = 4,
        crop: int = 128,
        seed: int = 0,
        references: Sequence[np.ndarray] | None = None,
    ):
        small = [m.shape for m in micrographs if min(m.shape) < crop]
        if not micrographs or small:
            raise InputError(f"data consistency: need real micrographs of at least {crop} px (got {small or 'none'})")
        if references is not None and [r.shape for r in references] != [m.shape for m in micrographs]:
            raise InputError("data consistency: need one reference output of each micrograph's shape")
        self.micrographs = list(micrographs)
        self.references = None if references is None else list(references)
        self.sigma = max(radius_px / 3.0, 1.0)
        self.kernel = gaussian_kernel(self.sigma, crop // 2 - 1)
        self.weight, self.batch, self.crop, self.seed = float(weight), int(batch), int(crop), int(seed)

    @classmethod
    def from_files(
        cls,
        paths: Sequence[str | os.PathLike],
        pixel_size: float,
        radius_px: float,
        weight: float,
        batch: int | None = None,
        crop: int | None = None,
        seed: int = 0,
        reference: str | os.PathLike | None = None,
        device: str = "cpu",
    ) -> "RealConsistency":
        """Up to :data:`MAX_MICROGRAPHS` of ``paths`` (spread evenly), read and standardized;
        each must have the training pairs' ``pixel_size`` [Å/px] (InputError naming the file).
        ``crop`` None: :func:`crop_for` the radius, at most the smallest micrograph's side;
        ``batch`` None: :func:`batch_for` the crop. ``reference``: a denoiser model file (the shipped
        general model in the fine stage) run once over the chosen micrographs on ``device``; its
        outputs bound the band with them; None = equal to the micrographs."""
        from .io import read_mrc

        paths = [Path(p) for p in paths]
        if not paths:
            raise InputError("data consistency: no real micrographs given")
        chosen = [paths[int(i)] for i in np.unique(np.linspace(0, len(paths) - 1, MAX_MICROGRAPHS).round())]
        images = []
        for path in chosen:
            image, pixel = read_mrc(path)
            if pixel > 0 and abs(pixel / pixel_size - 1) > PIXEL_MATCH:
                raise InputError(
                    f"{path}: pixel size {pixel:g} Å differs from the training pairs' {pixel_size:g} Å; "
                    "simulate the pairs at the micrographs' pixel size"
                )
            images.append(standardize(image, *stats(image)))
        references = None
        if reference is not None:
            from .denoise import Denoiser

            model = Denoiser.from_file(reference, device)
            references = [model.denoise(image) for image in images]  # standardized in, same units out
        if crop is None:
            crop = max(32, min(crop_for(radius_px), min(min(m.shape) for m in images) // 32 * 32))
        term = cls(images, radius_px, weight, batch_for(crop) if batch is None else batch, crop, seed, references)
        band = f"between them and {Path(reference).name}'s output" if reference is not None else "equal to them"
        log.info(
            f"data consistency with {len(images)} real micrograph(s) ({band}), weight {weight:g}, "
            f"low-pass sigma {term.sigma:.1f} px, {term.batch} crop(s) of {crop} px per step"
        )
        return term

    def crops(self, step: int) -> np.ndarray:
        """(batch, 1, crop, crop) random crops with a random dihedral transform for ``step``."""
        return self._crops(step, [self.micrographs])[0]

    def _crops(self, step: int, sources: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """The step's crops, one stack per list of images in ``sources``, all at the same places."""
        rng = np.random.default_rng([self.seed, 7919, step])
        out: list[list[np.ndarray]] = [[] for _ in sources]
        for _ in range(self.batch):
            index = int(rng.integers(len(self.micrographs)))
            y0 = int(rng.integers(self.micrographs[index].shape[0] - self.crop + 1))
            x0 = int(rng.integers(self.micrographs[index].shape[1] - self.crop + 1))
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            for stack, images in zip(out, sources):
                tile = np.rot90(images[index][y0 : y0 + self.crop, x0 : x0 + self.crop], turns)
                stack.append(tile[:, ::-1] if flip else tile)
        return [np.stack(stack)[:, None].copy() for stack in out]

    def __call__(self, network: nn.Module, step: int) -> torch.Tensor:
        device = next(network.parameters()).device
        crops = self._crops(step, [self.micrographs] + ([self.references] if self.references is not None else []))
        r = torch.from_numpy(crops[0]).to(device, memory_format=torch.channels_last)
        target = lowpass(r, self.kernel)
        out = lowpass(network(r).float(), self.kernel)
        if self.references is None:
            return self.weight * (out - target).square().mean()
        ref = lowpass(torch.from_numpy(crops[1]).to(device), self.kernel)
        low, high = torch.minimum(target, ref), torch.maximum(target, ref)
        return self.weight * (torch.relu(low - out) + torch.relu(out - high)).square().mean()


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
