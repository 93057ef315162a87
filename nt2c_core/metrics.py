"""Image-quality metrics for denoisers: PSNR, SSIM, FRC, and the NT2C paper's eq. 5 SNR.

A denoiser's output scale and offset are arbitrary, so PSNR and SSIM first fit the prediction to
the truth by least squares (truth ~ a * pred + b) and score the fitted prediction; every method is
treated the same way. PSNR's peak is the truth's range (max - min). Eq. 5 SNR rewards blur (a wide
Gaussian filter gains several dB), so never judge a denoiser by it alone: pair it with PSNR/FRC
against ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity


def fit_scale_offset(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Least-squares (a, b) minimizing ||a * pred + b - truth||^2."""
    p = np.asarray(pred, np.float64).ravel()
    t = np.asarray(truth, np.float64).ravel()
    pc = p - p.mean()
    var = float(pc @ pc)
    a = float(pc @ (t - t.mean())) / var if var > 0 else 0.0
    return a, float(t.mean() - a * p.mean())


def _fitted(pred: np.ndarray, truth: np.ndarray, fit: bool) -> np.ndarray:
    if not fit:
        return np.asarray(pred, np.float64)
    a, b = fit_scale_offset(pred, truth)
    return a * np.asarray(pred, np.float64) + b


def psnr(pred: np.ndarray, truth: np.ndarray, fit: bool = True) -> float:
    """Peak SNR in dB with peak = truth.max() - truth.min(), after the scale/offset fit."""
    truth = np.asarray(truth, np.float64)
    mse = float(np.mean((_fitted(pred, truth, fit) - truth) ** 2))
    peak = float(truth.max() - truth.min())
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def band_psnr(pred: np.ndarray, truth: np.ndarray, radius_px: float) -> float:
    """PSNR [dB] in the particle band and finer: both images less their Gaussian low-pass at
    sigma = the particle radius [px], then :func:`psnr`. It leaves out what is larger than a
    particle (an ice-thickness ramp, a slow background), which picking ignores and whose place in
    the truth is a matter of definition."""
    from scipy.ndimage import gaussian_filter

    def high(a):
        a = np.asarray(a, np.float64)
        return a - gaussian_filter(a, radius_px)

    return psnr(high(pred), high(truth))


def ssim(pred: np.ndarray, truth: np.ndarray, fit: bool = True) -> float:
    """Structural similarity (scikit-image, 7-px windows) after the scale/offset fit."""
    truth = np.asarray(truth, np.float64)
    return float(structural_similarity(_fitted(pred, truth, fit), truth, data_range=float(truth.max() - truth.min())))


@dataclass
class FRC:
    """Fourier ring correlation: ring frequencies (1/Å, or cycles/px when no pixel size) and values."""

    frequency: np.ndarray
    correlation: np.ndarray

    def resolution(self, threshold: float) -> float:
        """1 / (first frequency where the curve drops below ``threshold``), in Å (or px); inf when
        it never rises above it, the Nyquist resolution when it never drops below."""
        below = np.nonzero(self.correlation < threshold)[0]
        if len(below) == 0:
            return float(1.0 / self.frequency[-1])
        i = int(below[0])
        if i == 0:
            return math.inf
        f0, f1 = self.frequency[i - 1], self.frequency[i]
        c0, c1 = self.correlation[i - 1], self.correlation[i]
        f = f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1) if c0 != c1 else f1
        return float(1.0 / f)


def frc(a: np.ndarray, b: np.ndarray, pixel_size: float = 1.0) -> FRC:
    """FRC of two images of the same shape, in rings one Fourier pixel wide up to Nyquist
    (:func:`fsc` in 2-D). Non-square images are cropped to their central square."""
    n = min(a.shape)
    return fsc(_centre_square(a, n), _centre_square(b, n), pixel_size)


def fsc(a: np.ndarray, b: np.ndarray, voxel_size: float = 1.0) -> FRC:
    """Fourier shell correlation of two volumes (or images) of the same shape, any side lengths:
    shells one Fourier voxel wide (of the shortest side) up to Nyquist. Same result type as
    :func:`frc` (``resolution(0.143)`` etc.)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"FSC needs volumes of one shape, got {a.shape} and {b.shape}")
    fa, fb = np.fft.rfftn(a - a.mean()), np.fft.rfftn(b - b.mean())
    axes = [np.fft.fftfreq(n) for n in a.shape[:-1]] + [np.fft.rfftfreq(a.shape[-1])]
    k2 = sum(np.meshgrid(*[f**2 for f in axes], indexing="ij", sparse=True))
    n = min(a.shape)
    shell = np.rint(np.sqrt(k2) * n).astype(int).ravel()
    # rfft keeps half of the spectrum: count the coefficients with a mirror image twice
    weight = np.full(fa.shape, 2.0)
    weight[..., 0] = 1.0
    if a.shape[-1] % 2 == 0:
        weight[..., -1] = 1.0
    weight = weight.ravel()
    keep = shell <= n // 2
    shell, weight = shell[keep], weight[keep]
    cross = np.bincount(shell, weight * (fa * np.conj(fb)).real.ravel()[keep])
    pa = np.bincount(shell, weight * (np.abs(fa) ** 2).ravel()[keep])
    pb = np.bincount(shell, weight * (np.abs(fb) ** 2).ravel()[keep])
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.nan_to_num(cross / np.sqrt(pa * pb))
    freq = np.arange(len(curve)) / (n * voxel_size)
    return FRC(freq[1:], curve[1:])


def _centre_square(image: np.ndarray, n: int) -> np.ndarray:
    h, w = image.shape
    y0, x0 = (h - n) // 2, (w - n) // 2
    return np.asarray(image[y0 : y0 + n, x0 : x0 + n], np.float64)


Box = tuple[int, int, int]  # (x centre, y centre, size) in px


def snr_eq5(image: np.ndarray, pairs: list[tuple[Box, Box]]) -> float:
    """NT2C paper eq. 5: (10/N) sum_i [log10 v_s^i - log10 v_b^i] over N (signal, background)
    region pairs, v_b the background variance and v_s the variance of signal - background mean."""
    terms = []
    for signal, background in pairs:
        xb = _region(image, background)
        xs = _region(image, signal) - xb.mean()
        terms.append(math.log10(xs.var()) - math.log10(xb.var()))
    return 10.0 * float(np.mean(terms))


def _region(image: np.ndarray, box: Box) -> np.ndarray:
    x, y, size = box
    half = size // 2
    return np.asarray(image[y - half : y - half + size, x - half : x - half + size], np.float64)


def regions_from_coordinates(
    shape: tuple[int, int], coords: np.ndarray, box: int, radius: float, limit: int | None = None
) -> list[tuple[Box, Box]]:
    """Region pairs: a ``box`` centred on each particle (x, y px) and, as its background, the
    nearest box on a box/4 grid that keeps clear of every particle disc of ``radius`` px (the
    paper: "background regions as close as possible to the corresponding signal region")."""
    h, w = shape
    half = box // 2
    coords = np.asarray(coords, np.float64).reshape(-1, 2)
    step = max(1, box // 4)
    ys, xs = np.mgrid[half : h - half : step, half : w - half : step]
    cand = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    clear = half * math.sqrt(2) + radius
    if len(coords):
        d = np.hypot(cand[:, None, 0] - coords[None, :, 0], cand[:, None, 1] - coords[None, :, 1])
        cand = cand[d.min(1) > clear]
    pairs = []
    inside = [(x, y) for x, y in coords if half <= x < w - half and half <= y < h - half]
    for x, y in inside[:limit]:
        if not len(cand):
            break
        j = int(np.argmin(np.hypot(cand[:, 0] - x, cand[:, 1] - y)))
        pairs.append(((int(round(x)), int(round(y)), box), (int(cand[j, 0]), int(cand[j, 1]), box)))
    return pairs
