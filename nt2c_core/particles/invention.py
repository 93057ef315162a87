"""Does a restorer invent its training structure? A check run with every restoration.

A learned restorer (SR3 above all: at low SNR a posterior sample is close to a sample of the
prior it learnt) can paint the structure it was trained on into images that hold none. The check
restores images of **pure noise matched to the data** (a random-phase field with the input
particles' mean 2-D power spectrum: the same box, dose and spectrum, no particle) and measures how
much of the training structure comes out, against the same measures on the noise itself and on the
noise Gaussian-filtered to the restored images' bandwidth (a blur that invents nothing but is as
smooth, so its correlations set the floor a smooth output reaches by chance):

- ``centre``: the mean correlation of each restored noise image with the training particles' mean
  image (the disc a restorer paints in the middle of an empty box);
- ``templates``: the mean, over restored noise images, of the best normalized cross-correlation
  with any stored training projection (8 flips / quarter turns, shifts up to box/8).

Correlations are of zero-mean, unit-norm images (scale -1..1). The **excess** is the larger of the
two measures' differences restored - Gaussian; above ``threshold`` (default 0.05) the restorer is
flagged as inventing: restored images must not be used for a reconstruction or for judging
structure, and the flag is written to the log, ``invention.json``, the MRC labels and (in Scipion)
the protocol's summary.

The references are stored in the restorer file (``extras``: ``invention_references``, training
clean images, and ``invention_mean``, their mean) by ``nt2c train-restorer``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..images import dihedral

logger = logging.getLogger(__name__)
INVENTION_THRESHOLD = 0.05  # excess correlation over the Gaussian control that flags invention
INVENTION_IMAGES = 256  # matched-noise images restored per check
REFERENCE_FLOATS = 1 << 20  # at most this many floats of stored training references (4 MB)
MEASURES = ("centre", "templates")


def unit_images(images: np.ndarray) -> np.ndarray:
    """Images (N, box, box) with zero mean and unit L2 norm each (constant images stay zero)."""
    a = np.asarray(images, np.float64)
    a = a - a.mean((-2, -1), keepdims=True)
    norm = np.sqrt((a**2).sum((-2, -1), keepdims=True))
    return (a / np.where(norm > 0, norm, 1)).astype(np.float32)


def _dihedral_stack(images: np.ndarray) -> np.ndarray:
    """The 8 flips / quarter turns of each image, (8 N, box, box)."""
    return np.concatenate([dihedral(images, k) for k in range(8)])


def training_references(clean: np.ndarray) -> dict[str, np.ndarray]:
    """What a restorer stores to be checked later: up to ``REFERENCE_FLOATS / box²`` (8-64)
    training clean images, evenly spread through the set, and the mean of all of them averaged over
    the 8 flips / quarter turns the training augments with (float32, unit norm)."""
    clean = np.asarray(clean, np.float32)
    box = clean.shape[-1]
    count = int(np.clip(REFERENCE_FLOATS // (box * box), 8, 64))
    pick = np.linspace(0, len(clean) - 1, min(count, len(clean))).round().astype(int)
    mean = _dihedral_stack(unit_images(clean).mean(0, keepdims=True)).mean(0)
    return {"invention_references": unit_images(clean[pick]), "invention_mean": unit_images(mean[None])[0]}


def matched_noise(images: np.ndarray, count: int = INVENTION_IMAGES, seed: int = 0) -> np.ndarray:
    """``count`` images of Gaussian noise with the mean 2-D power spectrum of ``images`` (each
    first made zero-mean, unit-variance): the data's spectrum with random phases, so no particle."""
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or len(images) == 0:
        raise InputError(f"need a stack of particle images to match noise to, got shape {images.shape}")
    a = images - images.mean((1, 2), keepdims=True)
    a = a / np.maximum(a.std((1, 2), keepdims=True), 1e-12)
    power = np.mean(np.abs(np.fft.fft2(a)) ** 2, 0)
    power[0, 0] = 0.0
    white = np.random.default_rng([seed, 41]).standard_normal((count, *a.shape[1:]))
    noise = np.fft.ifft2(np.fft.fft2(white) * np.sqrt(power)).real
    return (noise / noise.std((1, 2), keepdims=True)).astype(np.float32)


def _frequency(box: int) -> np.ndarray:
    f = np.fft.fftfreq(box)
    return np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def _centroid(power: np.ndarray) -> float:
    """The power-weighted mean spatial frequency [1/px] of a 2-D power spectrum."""
    return float((power * _frequency(power.shape[-1])).sum() / max(power.sum(), 1e-30))


def gaussian_control(noise: np.ndarray, restored: np.ndarray) -> tuple[np.ndarray, float]:
    """``noise`` Gaussian-filtered (periodic, as the noise is) with the width sigma [px] that
    gives it the power-weighted mean frequency of ``restored``: (filtered images, sigma)."""
    power = np.mean(np.abs(np.fft.fft2(unit_images(noise))) ** 2, 0)
    target = _centroid(np.mean(np.abs(np.fft.fft2(unit_images(restored))) ** 2, 0))
    f2 = _frequency(noise.shape[-1]) ** 2
    sigmas = np.arange(0.0, 8.0001, 0.05)
    centroids = [_centroid(power * np.exp(-4 * np.pi**2 * s**2 * f2)) for s in sigmas]
    sigma = float(sigmas[int(np.argmin(np.abs(np.array(centroids) - target)))])
    filtered = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-2 * np.pi**2 * sigma**2 * f2)).real
    return filtered.astype(np.float32), sigma


def correlation_scores(images: np.ndarray, references: np.ndarray, mean: np.ndarray, chunk: int = 16) -> dict:
    """``centre`` and ``templates`` (see the module text) of images (N, box, box) against unit
    training references (K, box, box) and their unit mean image (box, box)."""
    x = unit_images(images)
    box = x.shape[-1]
    centre = float(np.mean((x * mean[None]).sum((1, 2))))
    templates = torch.from_numpy(np.ascontiguousarray(_dihedral_stack(references)))
    t_ft = torch.fft.rfft2(templates).conj()
    reach = max(1, box // 8)
    near = np.r_[0 : reach + 1, box - reach : box]
    best = []
    for start in range(0, len(x), chunk):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + chunk]))
        cc = torch.fft.irfft2(torch.fft.rfft2(xb)[:, None] * t_ft[None], s=(box, box))
        best.append(cc[:, :, near][:, :, :, near].amax((1, 2, 3)).numpy())
    return {"centre": centre, "templates": float(np.mean(np.concatenate(best)))}


@dataclass
class InventionReport:
    """The invention check of one restoration: the measures of restored matched noise, of the noise
    itself (raw) and of the Gaussian control, the control's sigma [px], the excess and the verdict."""

    images: int
    restored: dict
    raw: dict
    gaussian: dict
    gaussian_sigma_px: float
    threshold: float = INVENTION_THRESHOLD
    excess: float = field(init=False)
    flagged: bool = field(init=False)

    def __post_init__(self):
        self.excess = float(max(self.restored[m] - self.gaussian[m] for m in MEASURES))
        self.flagged = bool(self.excess > self.threshold)

    def message(self) -> str:
        """One line for the log and the summary."""
        figures = (
            f"templates {self.restored['templates']:.3f} vs Gaussian {self.gaussian['templates']:.3f} "
            f"(raw {self.raw['templates']:.3f}), centre {self.restored['centre']:.3f} vs "
            f"{self.gaussian['centre']:.3f}"
        )
        if self.flagged:
            return (
                f"INVENTION: restored pure noise looks like the training structure (excess correlation "
                f"{self.excess:.3f} > {self.threshold:.2f}; {figures}): the restorer paints its training "
                "structure into noise; do not reconstruct from or judge structure on these images "
                "(use them for picking/alignment only, and reconstruct from the raw particles)"
            )
        return (
            f"invention check passed: restored pure noise is no more like the training structure than "
            f"blurred noise (excess {self.excess:.3f} <= {self.threshold:.2f}; {figures})"
        )

    def label(self) -> str:
        """A short MRC header label."""
        return f"invention excess={self.excess:.3f} {'FLAGGED' if self.flagged else 'passed'}"

    def to_dict(self) -> dict:
        return {**asdict(self), "message": self.message()}


def invention_check(
    restore,
    images: np.ndarray,
    references: np.ndarray,
    mean: np.ndarray,
    count: int = INVENTION_IMAGES,
    seed: int = 0,
    threshold: float = INVENTION_THRESHOLD,
) -> InventionReport:
    """Restore ``count`` matched-noise images with ``restore`` (a function: images (N, box, box)
    -> restored images) and score them against the training ``references`` and ``mean``."""
    if references.shape[-2:] != images.shape[-2:]:
        raise InputError(
            f"the restorer's training references are {references.shape[-1]} px, the particles "
            f"{images.shape[-1]} px: restore particles of the box it was trained on"
        )
    noise = matched_noise(images, count, seed)
    restored = np.asarray(restore(noise), np.float32)
    if not np.all(np.isfinite(restored)):
        raise InputError("the restorer gave NaN/Inf on matched noise: the model is damaged")
    gauss, sigma = gaussian_control(noise, restored)
    report = InventionReport(
        count,
        correlation_scores(restored, references, mean),
        correlation_scores(noise, references, mean),
        correlation_scores(gauss, references, mean),
        sigma,
        threshold,
    )
    (logger.warning if report.flagged else logger.info)(report.message())
    return report
