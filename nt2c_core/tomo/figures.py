"""Central slices of tomograms side by side (x-y at the middle z, x-z at the middle y), one common
contrast per row; used by the Scipion viewer, the benchmark and the README figures."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _standardized(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume, np.float32)
    return (volume - volume.mean()) / max(float(volume.std()), 1e-8)


def draw_slices(axes_xy, axes_xz, volumes: Sequence[np.ndarray], titles: Sequence[str]) -> None:
    """Fill one x-y and one x-z axis per volume (each z-scored and shown between its own 1st and 99th percentiles)."""
    for ax_xy, ax_xz, volume, title in zip(axes_xy, axes_xz, volumes, titles):
        v = _standardized(volume)
        lo, hi = np.percentile(v, (1, 99))
        ax_xy.imshow(v[v.shape[0] // 2], cmap="gray", vmin=lo, vmax=hi)
        ax_xy.set_title(f"{title}: x-y, z = {v.shape[0] // 2}")
        ax_xz.imshow(v[:, v.shape[1] // 2, :], cmap="gray", vmin=lo, vmax=hi, aspect="equal")
        ax_xz.set_title(f"x-z, y = {v.shape[1] // 2}")
        for ax in (ax_xy, ax_xz):
            ax.axis("off")


def slices_figure(volumes: Sequence[np.ndarray], titles: Sequence[str], suptitle: str = ""):
    """A matplotlib Figure (no display needed): a column per volume, x-y above x-z."""
    from matplotlib.figure import Figure

    n = len(volumes)
    d, h, w = volumes[0].shape
    fig = Figure(figsize=(3.2 * n, 3.2 * (h + d) / w + 0.8))
    grid = fig.add_gridspec(2, n, height_ratios=[h, d])
    axes_xy = [fig.add_subplot(grid[0, i]) for i in range(n)]
    axes_xz = [fig.add_subplot(grid[1, i]) for i in range(n)]
    draw_slices(axes_xy, axes_xz, volumes, titles)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
