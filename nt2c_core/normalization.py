"""Per-micrograph normalization, identical at training and inference.

A micrograph x is standardized as (x - mean(x)) / std(x) over the whole micrograph. A training
pair uses the *noisy* micrograph's mean and std for both images, so the network learns to map the
standardized noisy image to the clean image in the same units; at inference the output is mapped
back with the input's mean and std, so denoised micrographs keep the input's units.
"""

from __future__ import annotations

import numpy as np

NORMALIZATION = {"type": "zscore-per-micrograph", "statistics_from": "noisy input"}


def stats(image: np.ndarray) -> tuple[float, float]:
    """(mean, std) of a micrograph in float64; std is at least 1e-8."""
    mean = float(np.mean(image, dtype=np.float64))
    std = float(np.std(image, dtype=np.float64))
    return mean, max(std, 1e-8)


def standardize(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((image - mean) / std).astype(np.float32)


def restore(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    return (image * std + mean).astype(np.float32)
