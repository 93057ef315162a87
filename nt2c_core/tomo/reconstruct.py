"""Weighted back-projection (WBP) of a single-axis tilt series, tilt axis = y.

Geometry: a voxel (x, y, z) (px, about the volume centre) projects at x' = x cos t + z sin t in
the tilt image of angle t; :func:`nt2c_core.tomo.simulate` images particles with the same rotation.
Each tilt image is ramp-filtered along x (|k|, zero-padded to twice the width against wrap-around,
with an optional Gaussian low-pass) and smeared back with linear interpolation; y rows are
independent, so the work is vectorised over y. Memory: about three volumes of float32.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..logs import progress as progress_bar


def ramp_filter(tilts: torch.Tensor, lowpass_sigma: float = 0.0) -> torch.Tensor:
    """Ramp-filter (T, Y, X) tilt images along x; ``lowpass_sigma`` [px] > 0 multiplies the ramp
    by the transform of a Gaussian of that sigma (the over-smoothed reconstruction)."""
    width = tilts.shape[-1]
    n = 2 * width
    k = torch.fft.rfftfreq(n, dtype=torch.float32)
    weight = 2.0 * k.abs()
    weight[0] = 0.5 / n  # keep a little of the mean so the volume's offset is not lost entirely
    if lowpass_sigma > 0:
        weight = weight * torch.exp(-2.0 * (math.pi * lowpass_sigma * k) ** 2)
    spectrum = torch.fft.rfft(tilts, n=n, dim=-1) * weight.to(tilts.device)
    return torch.fft.irfft(spectrum, n=n, dim=-1)[..., :width]


def backproject(
    tilts: np.ndarray | torch.Tensor,
    angles_deg: Sequence[float],
    thickness: int,
    lowpass_sigma: float = 0.0,
    progress: bool = False,
) -> np.ndarray:
    """WBP volume (thickness, Y, X) float32 from tilt images (T, Y, X) at ``angles_deg``."""
    proj = torch.as_tensor(np.asarray(tilts, np.float32))
    if proj.ndim != 3 or proj.shape[0] != len(angles_deg):
        raise ValueError(f"need (tilts, y, x) images for {len(angles_deg)} angles, got shape {tuple(proj.shape)}")
    filtered = ramp_filter(proj, lowpass_sigma)
    _, height, width = filtered.shape
    cx, cz = (width - 1) / 2.0, (thickness - 1) / 2.0
    xs = torch.arange(width, dtype=torch.float32) - cx
    zs = torch.arange(thickness, dtype=torch.float32) - cz
    volume = torch.zeros((height, thickness, width), dtype=torch.float32)
    for i, angle in enumerate(progress_bar(angles_deg, desc="back-project", unit="tilt", disable=not progress)):
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        pos = xs[None, :] * c + zs[:, None] * s + cx  # (Z, X) sample positions in the tilt image
        left = torch.floor(pos)
        frac = pos - left
        left = left.long()
        inside0 = (left >= 0) & (left < width)
        inside1 = (left + 1 >= 0) & (left + 1 < width)
        row = filtered[i]  # (Y, X)
        v0 = row[:, left.clamp(0, width - 1)] * (inside0 * (1 - frac))[None]
        v1 = row[:, (left + 1).clamp(0, width - 1)] * (inside1 * frac)[None]
        volume += v0 + v1
    volume *= math.pi / len(angles_deg)
    return volume.permute(1, 0, 2).contiguous().numpy()
