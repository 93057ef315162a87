"""Power spectra of micrographs: Welch-averaged 2-D periodograms, radial profiles, and a distance
between radially averaged spectra (mean absolute log10 ratio).

Convention: images are turned into relative contrast ``x / mean(x) - 1`` first, so a detector's
gain does not matter, and a periodogram is |FFT|^2 / (number of pixels): white noise of variance
s^2 has a flat spectrum at s^2. Frequencies are in 1/Å on the rfft2 grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass
class Spectrum:
    """A Welch-averaged periodogram on the rfft2 grid of a ``tile`` x ``tile`` square.

    power: (tile, tile//2 + 1) array; k: |k| [1/Å] of each entry; pixel_size [Å/px]; tiles: how
    many tiles were averaged."""

    power: np.ndarray
    k: np.ndarray
    pixel_size: float
    tiles: int

    @property
    def nyquist(self) -> float:
        return 0.5 / self.pixel_size

    def kxy(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.power.shape[0]
        kx = np.fft.rfftfreq(n, self.pixel_size)[None, :]
        ky = np.fft.fftfreq(n, self.pixel_size)[:, None]
        return np.broadcast_to(kx, self.power.shape), np.broadcast_to(ky, self.power.shape)

    def radial(self, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(k centres [1/Å], radial average of ``values`` (default: the power)), one bin per
        frequency step 1/(tile px), up to Nyquist; the x/y axes (edge artefacts) are left out."""
        values = self.power if values is None else values
        n = self.power.shape[0]
        index = np.rint(self.k * n * self.pixel_size).astype(int)
        keep = _off_axes(self.power.shape) & (index < n // 2)
        sums = np.bincount(index[keep], values[keep], minlength=n // 2)
        counts = np.bincount(index[keep], minlength=n // 2)
        good = counts > 0
        centres = np.arange(n // 2) / (n * self.pixel_size)
        return centres[good], sums[good] / counts[good]


def contrast(image: np.ndarray, path: str = "image") -> np.ndarray:
    """``image / mean - 1`` in float64; refuses an image that cannot be counts (mean not
    positive or more than 5 % negative pixels: e.g. an already normalized micrograph)."""
    x = np.asarray(image, dtype=np.float64)
    mean = float(x.mean())
    negative = float(np.mean(x < 0))
    if not np.isfinite(mean) or mean <= 0 or negative > 0.05:
        raise InputError(
            f"{path}: mean value {mean:.4g}, {100 * negative:.0f}% negative pixels; expected detector "
            "counts (not a normalized image)"
        )
    return x / mean - 1.0


def welch(images: list[np.ndarray], pixel_size: float, tile: int = 512) -> Spectrum:
    """Average periodogram of non-overlapping ``tile``-px squares of the contrast images (the tile
    shrinks to fit a small image; each tile's mean is removed, edges tapered by a Hann window
    normalized to keep white-noise power)."""
    if not images:
        raise InputError("power spectrum: no image given")
    tile = min(tile, *(min(x.shape) for x in images))
    tile -= tile % 2
    if tile < 64:
        raise InputError(f"power spectrum: images of {tile} px are too small (need at least 64 px)")
    window = np.outer(np.hanning(tile), np.hanning(tile))
    window /= np.sqrt(np.mean(window**2))
    total, count = np.zeros((tile, tile // 2 + 1)), 0
    for image in images:
        h, w = image.shape
        for y in range(0, h - tile + 1, tile):
            for x in range(0, w - tile + 1, tile):
                t = image[y : y + tile, x : x + tile]
                total += np.abs(np.fft.rfft2((t - t.mean()) * window)) ** 2
                count += 1
    kx = np.fft.rfftfreq(tile, pixel_size)[None, :]
    ky = np.fft.fftfreq(tile, pixel_size)[:, None]
    return Spectrum(total / (count * tile * tile), np.sqrt(kx * kx + ky * ky), pixel_size, count)


def radial_power(images: list[np.ndarray], pixel_size: float, tile: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(k [1/Å], radially averaged power) of the contrast images."""
    return welch([contrast(x) for x in images], pixel_size, tile).radial()


def log_distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k_min: float = 0.0) -> float:
    """Mean |log10(Pa / Pb)| over the frequencies both profiles share above ``k_min`` [1/Å]
    (0.1 = the spectra differ by a factor 1.26 on average)."""
    ka, pa = a
    kb, pb = b
    n = min(len(ka), len(kb))
    if not np.allclose(ka[:n], kb[:n], rtol=1e-6):
        raise InputError("spectra to compare were computed on different frequency grids")
    keep = (ka[:n] >= k_min) & (pa[:n] > 0) & (pb[:n] > 0)
    return float(np.mean(np.abs(np.log10(pa[:n][keep] / pb[:n][keep]))))


def _off_axes(shape: tuple[int, int]) -> np.ndarray:
    keep = np.ones(shape, dtype=bool)
    keep[:, 0] = False
    keep[0, :] = False
    return keep
