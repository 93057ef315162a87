"""Noise-patch extraction: background of the raw micrographs, for the noise model.

Two rules (``ExtractionSettings.rule``):
- ``mask`` (default): a particle mask on a denoised image, squares cut from the free area; works
  at any particle density (see :mod:`nt2c_core.noise.background`).
- ``ssim``: the paper's patch-similarity rule (NT2C section 2.2.2), below.

The SSIM rule:
1. Coarse-denoise the micrograph; smooth it lightly (Gaussian, ``smooth`` px) and remove slow
   background trends (subtract a Gaussian low-pass at the tile scale, ``flatten``); scale it to
   [0, 1] robustly (0.5th/99.5th percentiles, clipped). Smoothing and flattening are ours, not the
   paper's: a coarse model trained briefly on CPU leaves ~2 % residual texture on the [0, 1] scale,
   which alone caps the SSIM of flat quadrants near 0.5 (c2 = 9e-4 needs std < ~0.013); 1.5 px of
   smoothing lifts background tiles to SSIM ~0.9 while tiles with particles stay near 0, and
   flattening handles uneven ice, which the paper names as its limitation. Set both to 0 for the
   paper's exact rule.
2. Tile it (d x d, step s = d/2); split each tile into N = n x n sub-patches.
3. A tile is background when the SSIM (eq. 3, global statistics of each sub-patch, c1 = 0.01^2,
   c2 = 0.03^2) of every pair of its sub-patches exceeds ``threshold`` (0.7).
4. Cut the background tiles from the *raw* micrograph.
All tiles of a micrograph are scored at once (numpy, no loop over pixel windows).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, NT2CError
from ..io import read_mrc, write_json, write_mrc, write_star
from ..layout import NOISE_STACK, NOISE_STAR, NOISE_SUMMARY, OVERLAYS
from ..logs import progress as progress_bar
from ..plots import noise_overlay
from ..settings import PAPER_PATCH, RULES, ExtractionSettings, suggest_patch_size  # noqa: F401 (re-exported)
from .background import band_power_ratio, choose_patch_size, count_by_size, fit_squares, free_area, grid_tiles


def to_unit_range(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scale to [0, 1] between two percentiles, clipping outliers (robust, unlike min-max)."""
    lo, hi = np.percentile(image, (low, high))
    return np.clip((image - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def gaussian_lowpass(image: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma)`` (mode 'reflect', kernel truncated at
    ``truncate`` sigma), computed with FFTs when the kernel is long: the reflected signal is
    periodic with period 2n, so each axis is a circular convolution of length 2n with the kernel
    wrapped onto it -- exact, and its cost does not grow with sigma. Flattening by the patch size
    (sigma 320 px) takes about 45 s per 4096² micrograph as a direct convolution."""
    from scipy import fft
    from scipy.ndimage import gaussian_filter

    radius = int(truncate * float(sigma) + 0.5)
    if radius < 32:
        return gaussian_filter(image, sigma, truncate=truncate)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(image, np.float64)
    for axis in range(out.ndim):
        n = out.shape[axis]
        wrapped = np.zeros(2 * n)
        np.add.at(wrapped, taps % (2 * n), kernel)
        periodic = np.concatenate([out, np.flip(out, axis)], axis=axis)
        shape = [-1 if a == axis else 1 for a in range(out.ndim)]
        spectrum = fft.rfft(periodic, axis=axis, workers=-1)
        spectrum *= fft.rfft(wrapped).reshape(shape)
        first = tuple(slice(0, n) if a == axis else slice(None) for a in range(out.ndim))
        out = fft.irfft(spectrum, n=2 * n, axis=axis, workers=-1)[first]
    return out.astype(np.asarray(image).dtype, copy=False)


def prepare_enhanced(enhanced: np.ndarray, settings: ExtractionSettings) -> np.ndarray:
    """Light smoothing and background flattening of the coarse-denoised image (see module doc)."""
    from scipy.ndimage import gaussian_filter

    out = np.asarray(enhanced, np.float32)
    if settings.smooth > 0:
        out = gaussian_filter(out, settings.smooth)
    if settings.flatten:
        out = out - gaussian_lowpass(out, settings.patch)
    return out


def tile_origins(shape: tuple[int, int], patch: int, stride: int) -> np.ndarray:
    """(y, x) top-left corners of all d x d tiles on a grid of the given stride."""
    h, w = shape
    ys, xs = np.arange(0, h - patch + 1, stride), np.arange(0, w - patch + 1, stride)
    return np.array([(y, x) for y in ys for x in xs], dtype=int).reshape(-1, 2)


def min_pairwise_ssim(tiles: np.ndarray, n: int, c1: float, c2: float) -> np.ndarray:
    """For tiles (T, d, d): the smallest SSIM between any two of their n x n sub-patches."""
    t, d, _ = tiles.shape
    q = d // n
    subs = tiles[:, : q * n, : q * n].reshape(t, n, q, n, q).transpose(0, 1, 3, 2, 4).reshape(t, n * n, q * q)
    mu = subs.mean(-1)
    centred = subs - mu[..., None]
    var = (centred**2).mean(-1)
    worst = np.full(t, np.inf)
    for i, j in itertools.combinations(range(n * n), 2):
        cov = (centred[:, i] * centred[:, j]).mean(-1)
        value = (
            (2 * mu[:, i] * mu[:, j] + c1)
            * (2 * cov + c2)
            / ((mu[:, i] ** 2 + mu[:, j] ** 2 + c1) * (var[:, i] + var[:, j] + c2))
        )
        worst = np.minimum(worst, value)
    return worst


@dataclass
class MicrographNoise:
    """Background tiles of one micrograph: (y, x) origins, their min SSIM, and the raw patches."""

    name: str
    origins: np.ndarray
    scores: np.ndarray
    patches: np.ndarray
    all_origins: np.ndarray = field(repr=False, default=None)
    all_scores: np.ndarray = field(repr=False, default=None)
    patch: int = 0
    free_fraction: float | None = None


def find_background(
    raw: np.ndarray,
    enhanced: np.ndarray,
    settings: ExtractionSettings,
    name: str = "",
    pixel_size: float = 0.0,
    patch: int | None = None,
    free: np.ndarray | None = None,
) -> MicrographNoise:
    """Background patches of one micrograph: found on ``enhanced`` (denoised), cut from ``raw``,
    by the settings' rule. ``pixel_size`` [Å/px] converts the particle diameter; ``patch``
    overrides the settings' patch size (the mask rule's automatic choice); ``free``: the mask
    rule's free area when already computed (``enhanced`` may then be None)."""
    s = settings.validate()
    if enhanced is not None and raw.shape != enhanced.shape:
        raise InputError(f"{name}: raw {raw.shape} and enhanced {enhanced.shape} differ in shape")
    if s.rule == "mask":
        size = patch or s.patch or 32
        if free is None:
            free = micrograph_free_area(enhanced, s, pixel_size, name)
        origins = fit_squares(free, size)
        keep = _has_noise(raw, origins, size) if len(origins) else np.zeros(0, bool)
        found = _cut(raw, name, origins, np.ones(len(origins)), keep, size)
        found.free_fraction = round(float(free.mean()), 4)
        return found
    s = replace(s, patch=patch or s.ssim_patch(pixel_size))
    origins = tile_origins(raw.shape, s.patch, s.stride)
    if not len(origins):
        raise InputError(f"{name}: micrograph {raw.shape} is smaller than one patch of {s.patch} px")
    unit = to_unit_range(prepare_enhanced(enhanced, s))
    tiles = np.stack([unit[y : y + s.patch, x : x + s.patch] for y, x in origins])
    scores = min_pairwise_ssim(tiles, math.isqrt(s.sub_patches), s.c1, s.c2)
    keep = (scores > s.threshold) & _has_noise(raw, origins, s.patch)
    return _cut(raw, name, origins, scores, keep, s.patch)


def micrograph_free_area(
    enhanced: np.ndarray, settings: ExtractionSettings, pixel_size: float, name: str = ""
) -> np.ndarray:
    """The mask rule's free area of one denoised micrograph (:func:`nt2c_core.noise.background.free_area`)."""
    if not pixel_size or pixel_size <= 0:
        raise InputError(f"{name}: the mask rule needs the pixel size; the MRC header gives {pixel_size:g} Å")
    return free_area(enhanced, settings.particle_diameter / 2 / pixel_size, settings.dilation)[0]


def _cut(raw, name, origins, scores, keep, patch) -> MicrographNoise:
    patches = (
        np.stack([raw[y : y + patch, x : x + patch] for y, x in origins[keep]])
        if keep.any()
        else np.zeros((0, patch, patch), np.float32)
    )
    return MicrographNoise(name, origins[keep], scores[keep], patches.astype(np.float32), origins, scores, patch=patch)


def _has_noise(raw: np.ndarray, origins: np.ndarray, patch: int) -> np.ndarray:
    """Tiles of the raw micrograph that carry noise at all: a constant (zero-variance) area, such
    as a blanked or saturated region, scores a perfect SSIM but is no noise to learn from. A tile
    is kept when its std exceeds 1 % of the micrograph's median tile std."""
    std = np.array([raw[y : y + patch, x : x + patch].std() for y, x in origins])
    return std > max(0.01 * float(np.median(std)), 0.0)


@dataclass
class ExtractionReport:
    """Patches per micrograph, micrographs without background, failures (name -> reason), the
    patch size used, the free-area fraction per micrograph (mask rule) and the particle-band
    power ratio of the patches against tiles of the whole micrographs
    (:func:`nt2c_core.noise.background.band_power_ratio`: below 1 = less particle signal)."""

    counts: dict[str, int]
    without_background: list[str]
    failed: dict[str, str]
    stack: Path | None
    settings: dict
    patch: int = 0
    free_fraction: dict[str, float] = field(default_factory=dict)
    band_power_ratio: float | None = None

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "patch": self.patch,
            "per_micrograph": self.counts,
            "free_fraction": self.free_fraction,
            "band_power_ratio": self.band_power_ratio,
            "without_background": self.without_background,
            "failed": self.failed,
            "settings": self.settings,
        }


def extract_noise(
    raw_paths: Sequence[str | os.PathLike],
    enhance: Callable[[np.ndarray], np.ndarray],
    out_dir: str | os.PathLike,
    settings: ExtractionSettings | None = None,
    min_patches: int = 1,
    normalize: bool = True,
    progress: bool = True,
    section: str | None = None,
) -> ExtractionReport:
    """Extract background noise patches from raw micrographs into ``out_dir``:
    ``noise_patches.mrcs`` (stack), ``noise_patches.star`` (micrograph, centre, score),
    ``overlays/<name>.png`` and ``summary.json``.

    ``enhance``: a denoiser (array -> array; the coarse model for the SSIM rule, any good one for
    the mask rule). ``normalize``: store patches z-scored with their micrograph's mean and std
    (the denoiser's input units). With the mask rule and no patch size, the first
    ``sample_micrographs`` micrographs choose it. A micrograph with no background is reported and
    skipped; fewer than ``min_patches`` in all is an error saying what to relax, naming settings
    as on the command line (``section`` None) or in a pipeline config (``section`` 'extraction').
    """

    from ..normalization import standardize, stats

    s = (settings or ExtractionSettings()).validate(section)
    out = Path(out_dir)
    paths = [Path(p) for p in raw_paths]
    counts, empty, failed, patches, rows, pixel, fractions, tiles = {}, [], {}, [], [], 0.0, {}, []
    cache: dict[Path, tuple] = {}
    patch = s.patch
    if s.rule == "mask" and patch is None:
        patch = _choose_mask_patch(paths, enhance, s, cache, failed, len(paths))
    for path in progress_bar(paths, desc="extract noise", unit="mic", disable=not progress):
        if path.stem in failed:
            continue
        try:
            raw, pixel, enhanced, free = cache.pop(path, None) or _load(path, enhance, s)
            found = find_background(raw, enhanced, s, path.stem, pixel, patch, free)
        except NT2CError as exc:
            failed[path.stem] = str(exc)
            continue
        counts[path.stem] = len(found.origins)
        if found.free_fraction is not None:
            fractions[path.stem] = found.free_fraction
        if not len(found.origins):
            empty.append(path.stem)
        mean, std = stats(raw)
        patches.append(standardize(found.patches, mean, std) if normalize else found.patches)
        tiles.append(standardize(grid_tiles(raw, found.patch, 16), mean, std))
        half = found.patch / 2
        rows += [(x + half, y + half, score, f"{path.name}") for (y, x), score in zip(found.origins, found.scores)]
        noise_overlay(
            out / OVERLAYS / f"{path.stem}.png",
            raw,
            found.origins,
            found.patch,
            f"{found.name}: {len(found.origins)} background tiles",
        )
        patch = found.patch
    total = int(sum(counts.values()))
    report = ExtractionReport(counts, empty, failed, None, asdict(s), patch or 0, fractions)
    if total < min_patches:
        raise InputError(too_few_message(total, min_patches, len(counts), s, patch, fractions, section))
    if not total:  # allowed with min_patches 0: the report (summary.json) is all there is
        write_json(out / NOISE_SUMMARY, {**report.to_dict(), "normalized": normalize})
        return report
    stack = np.concatenate(patches)
    if s.particle_diameter and pixel > 0:
        report.band_power_ratio = band_power_ratio(stack, np.concatenate(tiles), s.particle_diameter / pixel)
    report.stack = write_mrc(out / NOISE_STACK, stack, pixel or 1.0)
    write_star(
        out / NOISE_STAR,
        "noise_patches",
        ("rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"),
        rows,
    )
    write_json(out / NOISE_SUMMARY, {**report.to_dict(), "normalized": normalize})
    return report


def _load(path: Path, enhance, s: ExtractionSettings) -> tuple:
    """(raw, pixel size, denoised, None) for the SSIM rule; (raw, pixel size, None, free area)
    for the mask rule, which needs only the free area afterwards."""
    raw, pixel = read_mrc(path)
    if s.rule != "mask":
        return raw, pixel, enhance(raw), None
    return raw, pixel, None, micrograph_free_area(enhance(raw), s, pixel, path.stem)


def _choose_mask_patch(paths: list[Path], enhance, s: ExtractionSettings, cache: dict, failed: dict, n_all: int) -> int:
    """The mask rule's automatic patch size from the free areas of a sample of the micrographs
    (kept in ``cache`` for the main pass): the largest size whose count, scaled to all
    micrographs, reaches ``target_patches``."""
    totals: dict[int, int] = {}
    sample = paths[:: max(1, len(paths) // s.sample_micrographs)][: s.sample_micrographs]
    for path in sample:
        try:
            cache[path] = _load(path, enhance, s)
        except NT2CError as exc:
            failed[path.stem] = str(exc)
            continue
        for size, n in count_by_size(cache[path][3]).items():
            totals[size] = totals.get(size, 0) + n
    if not totals:
        return 32
    scale = n_all / max(len(cache), 1)
    return choose_patch_size({p: int(n * scale) for p, n in totals.items()}, s.target_patches)


def too_few_message(
    total: int, need: int, n: int, s: ExtractionSettings, patch, fractions: dict, section: str | None
) -> str:
    """What was found and what to relax, settings named for the route (``section``)."""
    from ..validation import setting_name

    text = f"only {total} noise patches found (need {need}) in {n} micrograph(s)"
    if s.rule == "mask":
        free = f"{100 * np.mean(list(fractions.values())):.1f} %" if fractions else "none"
        return (
            f"{text}, patch {patch} px, mean free area {free}: give more micrographs, a smaller "
            f"{setting_name('patch', section)} (multiple of 32) or a smaller {setting_name('dilation', section)} "
            f"(now {s.dilation}); check {setting_name('particle_diameter', section)} (now {s.particle_diameter} Å)"
        )
    return (
        f"{text}: lower {setting_name('threshold', section)} (now {s.threshold}), use a smaller "
        f"{setting_name('patch', section)} (now {patch} px), use the mask rule, or give more micrographs"
    )
