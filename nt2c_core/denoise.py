"""Whole-micrograph denoising in overlapping tiles, blended so no seams show.

Tiles start on multiples of 32 px of the (padded) micrograph, so the U-Net's five poolings see the
same pixel grid as in a single whole-image pass. Each tile's outer ``margin / 2`` px (where its
zero padding differs from the real neighbourhood) get weight 0, the next ``margin`` px a linear
ramp, and overlapping tiles are averaged with these weights: the result matches the one-pass
output to within a small tolerance (tested) at a fraction of its memory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .errors import InputError, NT2CError
from .io import read_mrc, write_mrc
from .models.store import load_model
from .models.unet import MULTIPLE
from .normalization import restore, standardize, stats

log = logging.getLogger(__name__)


@dataclass
class TileSettings:
    """tile: tile size [px], a multiple of 32; margin: overlap context per side [px], a multiple of
    32; batch: tiles per forward pass. ``low_memory`` halves the tile."""

    tile: int = 1024
    margin: int = 128
    batch: int = 1

    def validate(self) -> "TileSettings":
        if self.tile % MULTIPLE or self.margin % MULTIPLE or self.tile < 64:
            raise InputError(f"tile {self.tile} / margin {self.margin} px: both must be multiples of {MULTIPLE}, tile >= 64")
        if 2 * self.margin >= self.tile:
            raise InputError(f"margin {self.margin} px: must be less than half the tile ({self.tile} px)")
        if self.batch < 1:
            raise InputError("batch must be at least 1")
        return self


class Denoiser:
    """A loaded denoising model plus tiling settings; call :meth:`denoise` on float arrays."""

    def __init__(self, network: nn.Module, metadata: dict | None = None, device: str | torch.device = "cpu",
                 tiles: TileSettings | None = None, precision: str = "fp32"):
        self.device = torch.device(device)
        self.network = network.to(self.device, memory_format=torch.channels_last).eval()
        self.metadata = metadata or {}
        self.tiles = (tiles or TileSettings()).validate()
        if precision not in ("fp32", "bf16", "fp16"):
            raise InputError(f"precision {precision!r}: choose fp32, bf16 or fp16")
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    @classmethod
    def from_file(cls, path: str | os.PathLike, device="cpu", tiles: TileSettings | None = None,
                  precision: str = "fp32") -> "Denoiser":
        network, metadata = load_model(path, "cpu")
        return cls(network, metadata, device, tiles, precision)

    @property
    def pixel_size(self) -> float | None:
        return self.metadata.get("pixel_size")

    def denoise(self, image: np.ndarray, whole: bool = False) -> np.ndarray:
        """Denoised copy of a 2-D micrograph in the input's units (float32, same shape).
        ``whole``: one pass over the whole image (reference; needs much more memory)."""
        mean, std = stats(image)
        x = _pad(standardize(image, mean, std))
        t = self.tiles
        if whole or (x.shape[0] <= t.tile and x.shape[1] <= t.tile):
            out = self._forward(x[None])[0]
        else:
            out = self._tiled(x)
        h, w = image.shape
        return restore(out[:h, :w], mean, std)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch[:, None])).to(self.device, memory_format=torch.channels_last)
        if self.dtype is not None and self.device.type == "cuda":
            with torch.autocast("cuda", dtype=self.dtype):
                return self.network(x).float()[:, 0].cpu().numpy()
        return self.network(x)[:, 0].float().cpu().numpy()

    def _tiled(self, x: np.ndarray) -> np.ndarray:
        t = self.tiles
        h, w = x.shape
        ys, xs = _starts(h, t.tile, t.margin), _starts(w, t.tile, t.margin)
        acc = np.zeros_like(x)
        weight = np.zeros_like(x)
        boxes = [(y, x0) for y in ys for x0 in xs]
        for i in range(0, len(boxes), t.batch):
            chunk = boxes[i:i + t.batch]
            th, tw = min(t.tile, h), min(t.tile, w)
            outs = self._forward(np.stack([x[y:y + th, x0:x0 + tw] for y, x0 in chunk]))
            for (y, x0), out in zip(chunk, outs):
                win = np.outer(_window(y, th, h, t.margin), _window(x0, tw, w, t.margin))
                acc[y:y + th, x0:x0 + tw] += out * win
                weight[y:y + th, x0:x0 + tw] += win
        return acc / weight


def _pad(x: np.ndarray) -> np.ndarray:
    """Reflect-pad at the bottom/right to a multiple of 32 (edge-pad when the image is tiny)."""
    h, w = x.shape
    ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, ph), (0, pw)), mode=mode)


def _starts(length: int, tile: int, margin: int) -> list[int]:
    """Tile starts along one axis: multiples of 32, stride tile - 2*margin, last tile flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - 2 * margin
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def _window(start: int, size: int, length: int, margin: int) -> np.ndarray:
    """1-D blending weights of a tile: 0 on the outer margin/2, a linear ramp over the next margin,
    1 inside; sides on the micrograph's edge keep weight 1."""
    w = np.ones(size, np.float32)
    skip = margin // 2
    ramp = (np.arange(margin, dtype=np.float32) + 0.5) / margin
    if start > 0:
        w[:skip] = 0
        w[skip:skip + margin] = ramp
    if start + size < length:
        w[size - skip:] = 0
        w[size - skip - margin:size - skip] = ramp[::-1]
    return w


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool by ``factor`` (1, 2 or 4), cropping the bottom/right remainder. Coordinates
    picked on the binned image map back to full size as x_full = factor * x + (factor - 1) / 2."""
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean((1, 3)).astype(np.float32)


@dataclass
class DenoiseReport:
    """Per-run outcome: written outputs, skipped (already done) and failures (path -> reason)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{len(self.written)} denoised, {len(self.skipped)} already done, {len(self.failed)} failed"
        return text + "".join(f"\n  FAILED {path}: {why}" for path, why in self.failed.items())


def denoise_files(denoiser: Denoiser, inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                  bin_factor: int = 1, overwrite: bool = False, progress: bool = True) -> DenoiseReport:
    """Denoise MRC micrographs into ``out_dir`` (same file names, float32, pixel size x bin).

    A micrograph that fails (unreadable, NaN pixels, a stack...) is reported and skipped; the
    others are still processed. Existing outputs are kept unless ``overwrite``."""
    if bin_factor not in (1, 2, 4):
        raise InputError(f"bin = {bin_factor}: choose 1, 2 or 4")
    out_dir = Path(out_dir)
    report = DenoiseReport()
    for src in tqdm([Path(p) for p in inputs], desc="denoise", unit="mic", disable=not progress):
        dst = out_dir / (src.stem + ".mrc")
        try:
            if dst.resolve() == src.resolve():
                raise InputError("output would overwrite the input; choose another output folder")
            if dst.exists() and not overwrite:
                report.skipped.append(dst)
                continue
            image, pixel = read_mrc(src)
            _warn_pixel_size(src, pixel, denoiser.pixel_size)
            result = bin_image(denoiser.denoise(image), bin_factor)
            report.written.append(write_mrc(dst, result, pixel * bin_factor))
        except NT2CError as exc:
            report.failed[str(src)] = str(exc).replace(f"{src}: ", "")
    return report


def _warn_pixel_size(path: Path, pixel: float, trained: float | None) -> None:
    if trained and pixel > 0 and not 0.8 <= pixel / trained <= 1.25:
        log.warning("%s: pixel size %.3f Å differs from the model's %.3f Å by more than 25%%; "
                    "results may be poor (train a model at this pixel size)", path, pixel, trained)
