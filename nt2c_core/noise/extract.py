"""Patch-similarity guided noise-patch extraction (NT2C paper section 2.2.2).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, NT2CError
from ..io import atomic_write, read_mrc, write_json, write_mrc, write_star


@dataclass
class ExtractionSettings:
    """patch: tile size d [px]; step: tile step [px] (default d/2); sub_patches: N, a square
    number (4 = 2 x 2); threshold: minimum pairwise SSIM; c1, c2: SSIM constants on [0, 1];
    smooth: Gaussian sigma [px] applied to the enhanced image; flatten: subtract its low-pass
    (sigma = d) before scaling."""

    patch: int = 320
    step: int | None = None
    sub_patches: int = 4
    threshold: float = 0.7
    c1: float = 0.01 ** 2
    c2: float = 0.03 ** 2
    smooth: float = 1.5
    flatten: bool = True

    def validate(self) -> "ExtractionSettings":
        n = math.isqrt(self.sub_patches)
        if n * n != self.sub_patches or n < 2:
            raise InputError(f"sub-patches N = {self.sub_patches}: must be a square number >= 4")
        if self.patch < 8 or self.patch % n:
            raise InputError(f"patch d = {self.patch} px: must be >= 8 and divisible by sqrt(N) = {n}")
        if not -1 < self.threshold < 1:
            raise InputError(f"threshold = {self.threshold}: SSIM threshold must lie in (-1, 1)")
        if self.stride < 1:
            raise InputError(f"step = {self.step}: must be >= 1 px")
        return self

    @property
    def stride(self) -> int:
        return self.step if self.step else self.patch // 2


def suggest_patch_size(diameter_a: float, pixel_size: float, minimum: int = 64, maximum: int = 512) -> int:
    """Noise patch side d [px] for particles of ``diameter_a`` Å at ``pixel_size`` Å/px: the
    smallest multiple of 32 holding two particle diameters (a d/2 sub-patch then holds a whole
    particle, so a tile touching one fails the SSIM rule), within [minimum, maximum]. The paper's
    d = 320 corresponds to ~150 px particles."""
    if diameter_a <= 0 or pixel_size <= 0:
        raise InputError(f"particle diameter {diameter_a} Å and pixel size {pixel_size} Å/px must be positive")
    d = 32 * math.ceil(2 * diameter_a / pixel_size / 32)
    return int(min(max(d, minimum), maximum))


def to_unit_range(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scale to [0, 1] between two percentiles, clipping outliers (robust, unlike min-max)."""
    lo, hi = np.percentile(image, (low, high))
    return np.clip((image - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def prepare_enhanced(enhanced: np.ndarray, settings: ExtractionSettings) -> np.ndarray:
    """Light smoothing and background flattening of the coarse-denoised image (see module doc)."""
    from scipy.ndimage import gaussian_filter

    out = np.asarray(enhanced, np.float32)
    if settings.smooth > 0:
        out = gaussian_filter(out, settings.smooth)
    if settings.flatten:
        out = out - gaussian_filter(out, settings.patch)
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
    subs = tiles[:, :q * n, :q * n].reshape(t, n, q, n, q).transpose(0, 1, 3, 2, 4).reshape(t, n * n, q * q)
    mu = subs.mean(-1)
    centred = subs - mu[..., None]
    var = (centred ** 2).mean(-1)
    worst = np.full(t, np.inf)
    for i, j in itertools.combinations(range(n * n), 2):
        cov = (centred[:, i] * centred[:, j]).mean(-1)
        value = ((2 * mu[:, i] * mu[:, j] + c1) * (2 * cov + c2)
                 / ((mu[:, i] ** 2 + mu[:, j] ** 2 + c1) * (var[:, i] + var[:, j] + c2)))
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


def find_background(raw: np.ndarray, enhanced: np.ndarray, settings: ExtractionSettings,
                    name: str = "") -> MicrographNoise:
    """Background tiles of one micrograph: scored on ``enhanced`` (coarse-denoised), cut from ``raw``."""
    s = settings.validate()
    if raw.shape != enhanced.shape:
        raise InputError(f"{name}: raw {raw.shape} and enhanced {enhanced.shape} differ in shape")
    origins = tile_origins(raw.shape, s.patch, s.stride)
    if not len(origins):
        raise InputError(f"{name}: micrograph {raw.shape} is smaller than one patch of {s.patch} px")
    unit = to_unit_range(prepare_enhanced(enhanced, s))
    tiles = np.stack([unit[y:y + s.patch, x:x + s.patch] for y, x in origins])
    scores = min_pairwise_ssim(tiles, math.isqrt(s.sub_patches), s.c1, s.c2)
    keep = scores > s.threshold
    patches = np.stack([raw[y:y + s.patch, x:x + s.patch] for y, x in origins[keep]]) if keep.any() else \
        np.zeros((0, s.patch, s.patch), np.float32)
    return MicrographNoise(name, origins[keep], scores[keep], patches.astype(np.float32), origins, scores)


@dataclass
class ExtractionReport:
    """Patches per micrograph, micrographs without background, failures (name -> reason)."""

    counts: dict[str, int]
    without_background: list[str]
    failed: dict[str, str]
    stack: Path | None
    settings: dict

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))


def extract_noise(raw_paths: Sequence[str | os.PathLike], enhance: Callable[[np.ndarray], np.ndarray],
                  out_dir: str | os.PathLike, settings: ExtractionSettings | None = None,
                  min_patches: int = 1, normalize: bool = True, progress: bool = True) -> ExtractionReport:
    """Extract background noise patches from raw micrographs into ``out_dir``:
    ``noise_patches.mrcs`` (stack), ``noise_patches.star`` (micrograph, centre, SSIM),
    ``overlays/<name>.png`` and ``summary.json``.

    ``enhance``: the coarse denoiser (array -> array). ``normalize``: store patches z-scored with
    their micrograph's mean and std (the denoiser's input units). A micrograph with no background
    tile is reported and skipped; fewer than ``min_patches`` in all is an error saying what to relax.
    """
    from tqdm import tqdm

    from ..normalization import standardize, stats

    s = (settings or ExtractionSettings()).validate()
    out = Path(out_dir)
    counts, empty, failed, patches, rows, pixel = {}, [], {}, [], [], 0.0
    for path in tqdm([Path(p) for p in raw_paths], desc="extract noise", unit="mic", disable=not progress):
        try:
            raw, pixel = read_mrc(path)
            found = find_background(raw, enhance(raw), s, path.stem)
        except NT2CError as exc:
            failed[path.stem] = str(exc)
            continue
        counts[path.stem] = len(found.origins)
        if not len(found.origins):
            empty.append(path.stem)
        mean, std = stats(raw)
        patches.append(standardize(found.patches, mean, std) if normalize else found.patches)
        half = s.patch / 2
        rows += [(x + half, y + half, score, f"{path.name}") for (y, x), score in zip(found.origins, found.scores)]
        save_overlay(out / "overlays" / f"{path.stem}.png", raw, found, s.patch)
    total = int(sum(counts.values()))
    report = ExtractionReport(counts, empty, failed, None, asdict(s))
    if total < min_patches:
        raise InputError(f"only {total} noise patches found (need {min_patches}) in {len(counts)} micrograph(s): "
                         f"lower --threshold (now {s.threshold}), use a smaller --patch (now {s.patch} px), "
                         "or give more micrographs")
    report.stack = write_mrc(out / "noise_patches.mrcs", np.concatenate(patches), pixel or 1.0)
    write_star(out / "noise_patches.star", "noise_patches",
               ("rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"), rows)
    write_json(out / "summary.json", {"total": total, "per_micrograph": counts, "without_background": empty,
                                      "failed": failed, "settings": asdict(s), "normalized": normalize})
    return report


def draw_overlay(ax, raw: np.ndarray, origins: np.ndarray, patch: int, title: str) -> None:
    """Draw the (low-passed) raw micrograph with tiles at ``origins`` outlined on ``ax``."""
    from matplotlib.patches import Rectangle
    from scipy.ndimage import gaussian_filter

    shown = gaussian_filter(raw.astype(np.float32), max(raw.shape) / 512)
    lo, hi = np.percentile(shown, (1, 99))
    ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi)
    for y, x in origins:
        ax.add_patch(Rectangle((x, y), patch, patch, fill=False, edgecolor="lime", lw=0.8))
    ax.set_title(title)
    ax.axis("off")


def save_overlay(path: Path, raw: np.ndarray, found: MicrographNoise, patch: int) -> None:
    """PNG of the (low-passed) raw micrograph with the chosen background tiles outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6 * raw.shape[0] / raw.shape[1]))
    draw_overlay(ax, raw, found.origins, patch, f"{found.name}: {len(found.origins)} background tiles")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
