"""Small numpy-only image helpers (no torch), shared by the stages and by the Scipion viewers and
wizards, which must open fast: central crops and average-pool binning."""

from __future__ import annotations

import numpy as np

from .errors import InputError


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` px of an image (less along a shorter side)."""
    h, w = image.shape
    ch, cw = min(h, size), min(w, size)
    y, x = (h - ch) // 2, (w - cw) // 2
    return image[y : y + ch, x : x + cw]


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool by an integer ``factor`` (the denoise stage offers 1, 2 or 4), cropping the
    bottom/right remainder. Coordinates picked on the binned image map back to full size as
    x_full = factor * x + (factor - 1) / 2."""
    if factor == 1:
        return image
    if min(image.shape) < factor:
        raise InputError(f"image of {image.shape[0]} x {image.shape[1]} px is too small to bin by {factor}")
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean((1, 3)).astype(np.float32)


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips / quarter turns (k = 0..7) of the last two axes: k % 4 quarter turns,
    then a left-right flip for k >= 4."""
    a = np.rot90(a, k % 4, axes=(-2, -1))
    return a[..., ::-1] if k >= 4 else a
