"""Whole-micrograph denoising in overlapping tiles, blended so no seams show.

Tiles start on multiples of 32 px of the (padded) micrograph, so the U-Net's five poolings see the
same pixel grid as in a single whole-image pass. Each tile's outer ``margin / 2`` px (where its
zero padding differs from the real neighbourhood) get weight 0, the next ``margin`` px a linear
ramp, and overlapping tiles are averaged with these weights: the result matches the one-pass
output to within a small tolerance (tested) at a fraction of its memory.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import InputError, NT2CError, is_out_of_memory
from .images import bin_image
from .io import ensure_writable_dir, read_mrc, read_mrc_labels, write_mrc
from .logs import progress as progress_bar
from .logs import staged
from .models.store import fingerprint, load_model
from .normalization import restore, standardize, stats
from .settings import PIXEL_RANGE_SLACK, SIZE_MULTIPLE, TileSettings

log = logging.getLogger(__name__)


class Denoiser:
    """A loaded denoising model plus tiling settings; call :meth:`denoise` on float arrays."""

    def __init__(
        self,
        network: nn.Module,
        metadata: dict | None = None,
        device: str | torch.device = "cpu",
        tiles: TileSettings | None = None,
        precision: str = "fp32",
    ):
        self.device = torch.device(device)
        self.network = network.to(self.device, memory_format=torch.channels_last).eval()
        self.metadata = metadata or {}
        self.tiles = (tiles or TileSettings()).validate()
        if precision not in ("fp32", "bf16", "fp16"):
            raise InputError(f"precision {precision!r}: choose fp32, bf16 or fp16")
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.multiple = int(getattr(network, "size_multiple", 1))  # input sides the network needs
        self.source: str | None = None  # the model file's name, when loaded from one

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, device="cpu", tiles: TileSettings | None = None, precision: str = "fp32"
    ) -> "Denoiser":
        network, metadata = load_model(path, "cpu", kind="denoiser")
        denoiser = cls(network, metadata, device, tiles, precision)
        denoiser.source = Path(path).name
        return denoiser

    @property
    def pixel_size(self) -> float | None:
        return self.metadata.get("pixel_size") or None

    @property
    def pixel_range(self) -> tuple[float, float] | None:
        """(min, max) pixel size [Å] the model was trained over: its range (the general model) or
        its one pixel size; None when unknown."""
        span = self.metadata.get("pixel_size_range")
        if isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, (int, float)) for v in span):
            return float(span[0]), float(span[1])
        return (self.pixel_size, self.pixel_size) if self.pixel_size else None

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of the SHA-256 of the weights: what made an output (MRC label)."""
        if not hasattr(self, "_fingerprint"):
            self._fingerprint = fingerprint(self.network)
        return self._fingerprint

    def denoise(self, image: np.ndarray, whole: bool = False) -> np.ndarray:
        """Denoised copy of a 2-D micrograph in the input's units (float32, same shape).
        ``whole``: one pass over the whole image (reference; needs much more memory)."""
        mean, std = stats(image)
        x = _pad(standardize(image, mean, std), self.multiple)
        t = self.tiles
        if whole or max(x.shape) <= ONE_PASS_SLACK * t.tile:
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
        (th, ys), (tw, xs) = (
            _axis_tiles(h, t.tile, t.margin, self.multiple),
            _axis_tiles(w, t.tile, t.margin, self.multiple),
        )
        acc = np.zeros_like(x)
        weight = np.zeros_like(x)
        boxes = [(y, x0) for y in ys for x0 in xs]
        for i in range(0, len(boxes), t.batch):
            chunk = boxes[i : i + t.batch]
            outs = self._forward(np.stack([x[y : y + th, x0 : x0 + tw] for y, x0 in chunk]))
            for (y, x0), out in zip(chunk, outs):
                win = np.outer(_window(y, th, h, t.margin), _window(x0, tw, w, t.margin))
                acc[y : y + th, x0 : x0 + tw] += out * win
                weight[y : y + th, x0 : x0 + tw] += win
        return acc / weight


def _pad(x: np.ndarray, multiple: int = SIZE_MULTIPLE) -> np.ndarray:
    """Reflect-pad at the bottom/right to a multiple of ``multiple`` (the network's size
    multiple; edge-pad when the image is tiny)."""
    h, w = x.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, ph), (0, pw)), mode=mode)


ONE_PASS_SLACK = 1.25  # an image up to 1.25x the tile goes in one pass (at most 1.56x its memory)


def _axis_tiles(length: int, tile: int, margin: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, list[int]]:
    """(tile size, starts) along one axis: as many tiles as ``tile`` needs, each shrunk to the
    smallest multiple of ``multiple`` (the network's) that still covers the axis, so an image
    slightly larger than one tile is not processed as two nearly whole tiles (1056 px with 1024-px
    tiles: 2 x 672, not 2 x 1024)."""
    if length <= tile:
        return length, [0]
    n = math.ceil((length - tile) / (tile - 2 * margin)) + 1
    size = multiple * math.ceil((length + 2 * margin * (n - 1)) / n / multiple)
    size = min(max(size, 2 * margin + multiple), tile)
    return size, _starts(length, size, margin)


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
        w[skip : skip + margin] = ramp
    if start + size < length:
        w[size - skip :] = 0
        w[size - skip - margin : size - skip] = ramp[::-1]
    return w


@dataclass
class DenoiseReport:
    """Per-run outcome: written outputs, skipped (already done with the same model and binning),
    failures (path -> reason) and warnings (path -> text)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{len(self.written)} denoised, {len(self.skipped)} already done, {len(self.failed)} failed"
        text += "".join(f"\n  WARNING {path}: {why}" for path, why in self.warnings.items())
        return text + "".join(f"\n  FAILED {path}: {why}" for path, why in self.failed.items())


def output_paths(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> dict[Path, Path]:
    """input -> output path (``out_dir/<stem>.mrc``); two inputs that would share an output name
    (a/mic.mrc and b/mic.mrc, or x.mrc and x.mrcs) are refused before any work is done."""
    out_dir, outputs, seen = Path(out_dir), {}, {}
    for src in (Path(p) for p in inputs):
        dst = out_dir / (src.stem + ".mrc")
        if dst in seen and seen[dst] != src:
            raise InputError(
                f"{seen[dst]} and {src} have the same output name {dst.name}: denoise them into "
                "separate output folders (or rename one)"
            )
        seen[dst] = src
        outputs[src] = dst
    return outputs


def provenance_label(denoiser: Denoiser, bin_factor: int) -> str:
    """The MRC label that records what made a denoised micrograph (<= 80 characters)."""
    return f"nt2c {__version__} denoise model-sha256={denoiser.fingerprint} bin={bin_factor}"


def model_label(denoiser: Denoiser) -> str:
    """The second MRC label: the model's file name, kind, architecture and the nt2c version that
    trained it (<= 80 characters; the weight hash is in :func:`provenance_label`)."""
    meta = denoiser.metadata
    arch = meta.get("architecture", {})
    text = (
        f"model={denoiser.source or '?'} kind={meta.get('kind', 'denoiser')} "
        f"arch={arch.get('name', '?')}{arch.get('width', '')} trained-by={meta.get('nt2c_version', '?')}"
    )
    return text[:80]


@staged("denoise", device=lambda a: a["denoiser"].device)
def denoise_files(
    denoiser: Denoiser,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    bin_factor: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> DenoiseReport:
    """Denoise MRC micrographs into ``out_dir`` (same file names, float32, pixel size x bin).

    Checked before any work: the output folder is writable and no two inputs share an output
    name. A micrograph that fails (unreadable, NaN pixels, a stack, too little memory, a
    non-finite result...) is reported and skipped; the others are still processed. Each output
    records the model's weight hash and the binning in its MRC labels: an existing output made
    the same way is kept (a stopped run resumes), one made with another model or binning is
    redone; ``overwrite`` redoes all."""
    if bin_factor not in (1, 2, 4):
        raise InputError(f"bin = {bin_factor}: choose 1, 2 or 4")
    outputs = output_paths(inputs, out_dir)
    ensure_writable_dir(out_dir)
    label = provenance_label(denoiser, bin_factor)
    report = DenoiseReport()
    for src, dst in progress_bar(list(outputs.items()), desc="denoise", unit="mic", disable=not progress):
        try:
            if dst.resolve() == src.resolve():
                raise InputError("output would overwrite the input; choose another output folder")
            if dst.exists() and not overwrite:
                if label in read_mrc_labels(dst):
                    damage = output_damage(dst)
                    if damage is None:
                        report.skipped.append(dst)
                        continue
                    log.warning("%s: an earlier output that is damaged (%s); redoing it", dst, damage)
                else:
                    log.info("%s: made with another model or binning; redoing it", dst)
            _, warning = denoise_file(denoiser, src, dst, bin_factor)
            report.written.append(dst)
            if warning:
                report.warnings[str(src)] = warning
        except NT2CError as exc:
            report.failed[str(src)] = str(exc).replace(f"{src}: ", "")
        except OSError as exc:  # unreadable (permissions), a vanished file, a full disk: this one fails
            report.failed[str(src)] = f"{exc.strerror or exc}"
    return report


def output_damage(path: Path) -> str | None:
    """Why an existing output cannot count as done (truncated, not an image, NaN/Inf pixels), or None."""
    try:
        read_mrc(path)
    except NT2CError as exc:
        return str(exc).replace(f"{path}: ", "")
    return None


def denoise_file(
    denoiser: Denoiser, src: str | os.PathLike, dst: str | os.PathLike, bin_factor: int = 1
) -> tuple[Path, str | None]:
    """Denoise one MRC micrograph into ``dst`` (float32, pixel size x ``bin_factor``, the
    provenance label in its header), atomically: (output path, warning or None). Raises
    :class:`NT2CError` for a bad input, a result that is not finite, or too little memory;
    nothing is written then. Used by :func:`denoise_files` and the Scipion denoise protocol."""
    src = Path(src)
    image, pixel = read_mrc(src)
    warning = _pixel_size_warning(pixel, denoiser.pixel_range)
    if warning:
        log.warning("%s: %s", src, warning)
    try:
        result = bin_image(denoiser.denoise(image), bin_factor)
    except (MemoryError, RuntimeError) as exc:  # torch reports a failed allocation as a RuntimeError
        if isinstance(exc, RuntimeError) and not is_out_of_memory(exc):
            raise
        raise NT2CError(
            f"{src}: not enough memory to denoise it (tile {denoiser.tiles.tile} px, batch "
            f"{denoiser.tiles.batch}): use --low-memory or a smaller --tile"
        ) from None
    if not np.isfinite(result).all():
        raise NT2CError(f"{src}: the denoised image is not finite (NaN/Inf); nothing was written")
    return write_mrc(
        dst, result, pixel * bin_factor, [provenance_label(denoiser, bin_factor), model_label(denoiser)]
    ), warning


def _pixel_size_warning(pixel: float, trained: tuple[float, float] | None) -> str | None:
    """A warning when the header's pixel size is invalid or more than 25 % outside the pixel
    size (range) the model was trained for."""
    if pixel <= 0:
        return (
            f"pixel size {pixel:g} Å in the MRC header is not valid; the output carries it too "
            "(fix the header, e.g. with Scipion's import or 'alterheader')"
        )
    if trained is None:
        return None
    lo, hi = trained
    if PIXEL_RANGE_SLACK[0] * lo <= pixel <= PIXEL_RANGE_SLACK[1] * hi:
        return None
    what = f"the model's {lo:.3f} Å" if lo == hi else f"the model's training range {lo:.2f}-{hi:.2f} Å"
    return (
        f"pixel size {pixel:.3f} Å is more than 25% outside {what}; results may be poor (halos, texture): "
        "train a model at this pixel size, or bin the micrographs into the range"
    )
