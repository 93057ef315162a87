"""NMSG: denoise a cryo-ET tomogram with a network trained on that single noisy volume.

Training (Yang et al. 2024, as far as the authors' code shows; see shared design notes): with n
the raw volume (z-scored), m synthetic noise drawn from the volume's own noise (:mod:`.noise`;
by default never more power at any spatial frequency than the volume itself has),
s = n + m, g = n Gaussian-filtered (``guide_sigma``) and o an over-smoothed reference (a WBP of
low-passed tilts when given, else n filtered with ``oversmooth_sigma``, least-squares scaled to n),

    loss = recon * MSE(f(s), n) + smooth * MSE(Sobel f(s), Sobel o) + guide * MSE(f(s), g),

Sobel = |Gx| + |Gy| in each x-y slice. f is the 3-D U-Net (:mod:`nt2c_core.models.unet3d`; the
authors' is residual, ours by default predicts the volume directly, ``NMSGConfig.residual``);
the denoised volume is f(n), computed in overlapping tiles.

That recon target (pairing 'nmsg') teaches f to remove the added noise only, E[n | n + m], which
keeps half of the noise (Noisier2Noise); on our simulated tomograms it stays below a plain
Gaussian filter (see the benchmark). Pairing 'r2r' (our default; Pang et al. 2021,
Recorrupted-to-Recorrupted) uses the same synthetic noise differently: input n + alpha m, target
n - m / alpha. When m has the noise's distribution, the two noises are uncorrelated, so the
expected target given the input is the clean volume: f learns a real denoiser (for noise
sqrt(1 + alpha^2) times the raw's) from the single volume. Inference then averages
f(n + alpha m_k) over ``infer_draws`` fresh draws m_k (or f(n) with 0 draws). The Sobel and guide
terms apply to both pairings. Random tiles per step depend only on
(seed, step), so a stopped run resumed from its checkpoint (``MODEL.ckpt``) ends with the same
weights as an uninterrupted one. Not done as the authors: no 2x in-plane up-sampling (4x the cost;
measure it before adding), Adam instead of Adagrad.

:func:`train_even_odd` is the noise2noise baseline (cryoCARE's idea with our 3-D U-Net): even ->
odd and odd -> even tiles, plain MSE.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from .. import __version__
from ..device import release_freed_memory
from ..errors import InputError
from ..io import ensure_writable_dir, read_mrc_volume, write_mrc
from ..logs import staged
from ..metrics import fit_scale_offset
from ..models.store import fingerprint, load_model, save_model
from ..noise.synthesize import train_noise_gan
from ..settings import NMSG, GANConfig, NMSGConfig
from ..training import FitResult, fit, mixed_precision, write_loss_log
from .noise import (
    GAN_PATCH,
    CubeMosaic,
    PowerCapped,
    SliceGAN,
    crop_tile,
    fitting_block,
    gan_slices,
    noise_cubes,
    tile_origins,
)

logger = logging.getLogger(__name__)
INFER_TILE = (64, 128, 128)  # inference tile (z, y, x) before margins [px]


@dataclass
class Standardized:
    """A volume z-scored for the network, with the statistics that restore its units."""

    data: np.ndarray
    mean: float
    std: float

    @classmethod
    def of(cls, volume: np.ndarray, name: str = "volume", in_place: bool = False) -> "Standardized":
        """``volume`` z-scored (a new array; with ``in_place``, a writable float32 ``volume`` itself,
        one tomogram-sized array less for a caller that is done with the raw values)."""
        volume = np.asarray(volume, np.float32)
        if volume.ndim != 3:
            raise InputError(f"{name}: need a 3-D volume, got shape {volume.shape}")
        if not np.all(np.isfinite(volume)):
            raise InputError(f"{name}: holds NaN or Inf values")
        std = float(volume.std())
        if std == 0:
            raise InputError(f"{name}: is constant (zero variance); nothing to denoise")
        mean = float(volume.mean())
        if in_place and volume.flags.writeable:
            volume -= mean
            volume /= std
            return cls(volume, mean, std)
        return cls((volume - mean) / std, mean, std)

    def restore(self, data: np.ndarray, in_place: bool = False) -> np.ndarray:
        """``data`` in the volume's units (with ``in_place``, float32 ``data`` rescaled itself)."""
        if in_place and data.dtype == np.float32:
            data *= self.std
            data += self.mean
            return data
        return (data * self.std + self.mean).astype(np.float32)


def sobel_xy(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of (N, 1, D, H, W) volumes, slice by slice (replicate padding)."""
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device, dtype=x.dtype)
    kernels = torch.stack([k, k.T])[:, None, None]  # (2, 1, 1, 3, 3)
    grads = F.conv3d(F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate"), kernels)
    return grads.abs().sum(1, keepdim=True)


def references(
    n: np.ndarray, config: NMSGConfig, oversmoothed: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(g, o): the Gaussian guide and the over-smoothed reference for the z-scored volume ``n``;
    None for a term whose loss weight is 0 (two 3-D filters of the whole volume saved)."""
    g = gaussian_filter(n, config.guide_sigma).astype(np.float32) if config.guide > 0 else None
    if config.smooth <= 0:
        return g, None
    if oversmoothed is None:
        return g, gaussian_filter(n, config.oversmooth_sigma).astype(np.float32)
    if oversmoothed.shape != n.shape:
        raise InputError(f"over-smoothed reference: shape {oversmoothed.shape} differs from the tomogram's {n.shape}")
    a, b = fit_scale_offset(oversmoothed, n)
    return g, (a * oversmoothed + b).astype(np.float32)


def cube_mosaic(n: np.ndarray, config: NMSGConfig, log: bool = False) -> CubeMosaic:
    """3-D mosaics of the quietest (noise_depth x noise_cube x noise_cube) blocks of the z-scored
    volume ``n`` (smaller blocks where the volume is too small for enough of them)."""
    depth, cube = fitting_block(n.shape, config.noise_cube, config.noise_fraction, depth=config.noise_depth)
    cubes = noise_cubes(n, cube, config.noise_fraction, depth=depth)
    if log:
        logger.info(
            f"noise: {len(cubes)} blocks of {cube} x {cube} x {depth} px (quietest {config.noise_fraction:.0%})"
        )
    return CubeMosaic(cubes)


def capped(synthesizer, n: np.ndarray, config: NMSGConfig, log: bool = False):
    """``synthesizer`` with its power capped at the z-scored volume ``n``'s (``config.noise_cap``),
    measured on training tiles; else ``synthesizer`` itself."""
    if not config.noise_cap:
        return synthesizer
    result = PowerCapped.fit(synthesizer, n, tile_shape(n.shape, config), seed=config.seed)
    if log:
        logger.info(f"noise: power capped at the volume's (mean power kept {float((result.gain**2).mean()):.0%})")
    return result


def noise_synthesizer(n: np.ndarray, config: NMSGConfig, work: Path | None, device: str, progress: bool):
    """The ``config.noise_model`` synthesizer from the quietest blocks of the z-scored volume
    (power-capped with ``config.noise_cap``)."""
    if config.noise_model == "patches3d":
        return capped(cube_mosaic(n, config, log=True), n, config, log=True)
    cubes = noise_cubes(n, GAN_PATCH, config.noise_fraction, depth=min(8, n.shape[0]))
    slices = gan_slices(cubes)
    logger.info(f"noise: {len(slices)} x-y slices of {GAN_PATCH} px for the 2-D GAN")
    gan_path = (work or Path(".")) / "noise_gan.pt"
    cfg = GANConfig(
        iterations=config.gan_iterations,
        crop=GAN_PATCH,
        seed=config.seed,
        checkpoint_every=max(config.gan_iterations // 4, 1),
    )
    train_noise_gan(slices, gan_path, cfg, resume=True, device=device, progress=progress)
    return capped(SliceGAN(load_model(gan_path, kind="noise-gan")[0]), n, config, log=True)


def _flips(rng: np.random.Generator, count: int, enabled: bool) -> np.ndarray:
    """Per-tile flips (count x 3 of 0/1 for z, y, x): random when ``enabled``, else none (and no
    draw from ``rng``, so runs without flips keep their tiles)."""
    return rng.integers(2, size=(count, 3)) if enabled else np.zeros((count, 3), dtype=int)


def tile_shape(shape: tuple[int, ...], config: NMSGConfig) -> tuple[int, int, int]:
    """Training tile (z, y, x): the configured tile, shrunk to the volume (multiples of 8)."""
    want = (config.tile_depth, config.tile_size, config.tile_size)
    tile = tuple(min(t, (n // 8) * 8) for t, n in zip(want, shape))
    if min(tile) < 8:
        raise InputError(f"volume {shape[::-1]} (x, y, z) px is too small: need at least 8 px a side")
    return tile


def train_unet3d(
    batch,
    loss_fn,
    config: NMSGConfig,
    ckpt: Path | None,
    device: str,
    progress: bool,
    desc: str,
    stop_after: int | None = None,
) -> FitResult:
    """``config``'s 3-D U-Net trained in the one training loop (:func:`nt2c_core.training.fit`),
    channels-last-3d (on CPU 1.3x faster per step than the default layout)."""
    return fit(
        config.architecture(),
        batch,
        loss_fn,
        config,
        ckpt,
        device,
        progress,
        stop_after,
        desc=desc,
        memory_format=torch.channels_last_3d,
    )


def train_nmsg(
    volume: np.ndarray,
    config: NMSGConfig = NMSG,
    oversmoothed: np.ndarray | None = None,
    work: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> FitResult:
    """Train NMSG's 3-D U-Net on one raw ``volume`` (z, y, x). ``work``: folder for the checkpoint
    (``nmsg.ckpt``, resumed when present) and the 2-D GAN of 'gan2d'."""
    config = config.validate()
    std = Standardized.of(volume)
    n = std.data
    g, o = references(n, config, None if oversmoothed is None else Standardized.of(oversmoothed, "over-smoothed").data)
    work_dir = ensure_writable_dir(work) if work is not None else None
    synth = noise_synthesizer(n, config, work_dir, device, progress)
    tile = tile_shape(n.shape, config)

    def batch(step: int):
        rng = np.random.default_rng([config.seed, step])
        origins = tile_origins(rng, n.shape, tile, config.batch_size)
        flips = _flips(rng, config.batch_size, config.flips)
        tn, tg, to = (
            None
            if v is None
            else torch.from_numpy(np.stack([crop_tile(v, o_, tile, f) for o_, f in zip(origins, flips)])[:, None])
            for v in (n, g, o)
        )
        noise = synth.sample(config.batch_size, tile, seed=config.seed * 1_000_003 + step).float()
        if config.pairing == "nmsg":
            return tn + noise, tn, tg, to
        return tn + config.alpha * noise, tn - noise / config.alpha, tg, to

    def loss_fn(network, x, tn, tg, to):
        out = network(x).float()
        terms = {"recon": F.mse_loss(out, tn)}
        if to is not None:
            terms["smooth"] = F.mse_loss(sobel_xy(out), sobel_xy(to))
        if tg is not None:
            terms["guide"] = F.mse_loss(out, tg)
        total = sum(getattr(config, name) * value for name, value in terms.items())
        return {"loss": total, **terms}

    ckpt = work_dir / "nmsg.ckpt" if work_dir is not None else None
    result = train_unet3d(batch, loss_fn, config, ckpt, device, progress, "nmsg", stop_after)
    result.synthesizer = synth
    return result


def train_even_odd(
    even: np.ndarray,
    odd: np.ndarray,
    config: NMSGConfig = NMSG,
    work: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> FitResult:
    """The noise2noise baseline: the same 3-D U-Net trained even -> odd and odd -> even (MSE)."""
    config = config.validate()
    a, b = Standardized.of(even, "even half").data, Standardized.of(odd, "odd half").data
    if a.shape != b.shape:
        raise InputError(f"even/odd halves differ in shape: {a.shape} vs {b.shape}")
    tile = tile_shape(a.shape, config)

    def batch(step: int):
        rng = np.random.default_rng([config.seed, step])
        origins = tile_origins(rng, a.shape, tile, config.batch_size)
        swap = rng.integers(2, size=config.batch_size).astype(bool)
        flips = _flips(rng, config.batch_size, config.flips)
        x = np.stack([crop_tile(b if s else a, o_, tile, f) for s, o_, f in zip(swap, origins, flips)])[:, None]
        y = np.stack([crop_tile(a if s else b, o_, tile, f) for s, o_, f in zip(swap, origins, flips)])[:, None]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

    def loss_fn(network, x, y):
        return {"loss": F.mse_loss(network(x).float(), y)}

    ckpt = Path(ensure_writable_dir(work)) / "even_odd.ckpt" if work is not None else None
    return train_unet3d(batch, loss_fn, config, ckpt, device, progress, "noise2noise")


@torch.inference_mode()
def apply_network(
    network: torch.nn.Module,
    volume: np.ndarray,
    margin: int = 8,
    device: str = "cpu",
    tile: tuple[int, int, int] = INFER_TILE,
    axes: tuple[int, ...] = (),
    add_to: np.ndarray | None = None,
) -> np.ndarray:
    """f(volume) for a z-scored volume, in tiles of ``tile`` plus ``margin`` px of context each side
    (only the centre of each tile is kept, so no seams). Every block the network sees has the same
    shape (a tile at the volume's edge takes its context from inside): the same allocations for
    every tile, so memory kept for reuse is reused instead of growing. ``axes``: F(f(F(volume))) instead, F the
    flip along those axes, tile by tile (no flipped copy of the volume). ``add_to``: the result is
    added to this array (returned) instead of written to a new one: a tomogram's draws and flips
    accumulate without a full-size array each."""
    dev = torch.device(device)
    network = network.to(dev, memory_format=torch.channels_last_3d).eval()  # 2x faster 3-D convolutions on CPU
    out = np.zeros_like(volume, dtype=np.float32) if add_to is None else add_to
    src, dst = (np.flip(volume, axes), np.flip(out, axes)) if axes else (volume, out)  # views
    starts = [range(0, n, t) for n, t in zip(volume.shape, tile)]
    autocast, _ = mixed_precision(dev, True)
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                core_end = [min(n, s + t) for s, t, n in zip((z, y, x), tile, volume.shape)]
                full = [min(n, t + 2 * margin) for t, n in zip(tile, volume.shape)]
                lo = [max(0, min(s - margin, n - f)) for s, n, f in zip((z, y, x), volume.shape, full)]
                hi = [low + f for low, f in zip(lo, full)]
                block = torch.from_numpy(np.ascontiguousarray(src[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]))
                with autocast():
                    x_in = block[None, None].to(dev, memory_format=torch.channels_last_3d)
                    pred = network(x_in).float()[0, 0].cpu().numpy()
                a = [s - low for s, low in zip((z, y, x), lo)]
                b = [e - low for e, low in zip(core_end, lo)]
                dst[z : core_end[0], y : core_end[1], x : core_end[2]] += pred[a[0] : b[0], a[1] : b[1], a[2] : b[2]]
    return out


FLIPS = [tuple(i for i in range(3) if k >> i & 1) for k in range(8)]  # the 8 subsets of the axes (z, y, x)


def apply_flipped(
    network: torch.nn.Module, volume: np.ndarray, margin: int = 8, device: str = "cpu", flips: bool = False
) -> np.ndarray:
    """f(volume) (:func:`apply_network`), or with ``flips`` the mean over the 8 flips F of the
    volume of F(f(F(volume))) (test-time averaging: 8x the time)."""
    if not flips:
        return apply_network(network, volume, margin, device)
    total = np.zeros_like(volume, dtype=np.float32)
    for axes in FLIPS:
        apply_network(network, volume, margin, device, axes=axes, add_to=total)
    total /= len(FLIPS)
    return total


def denoise_with(
    network: torch.nn.Module,
    volume: np.ndarray,
    margin: int = 8,
    device: str = "cpu",
    config: NMSGConfig | None = None,
    synthesizer=None,
    overwrite: bool = False,
) -> np.ndarray:
    """A raw volume denoised by ``network``, in the volume's own units. With an 'r2r' ``config``
    and ``infer_draws`` > 0: the mean of f(n + alpha m_k) over the draws, m_k from ``synthesizer``
    (default: 3-D mosaics of this volume's own noise blocks, power-capped with ``noise_cap``); otherwise f(n). With
    ``config.infer_flips``: draw k goes through the network under the k-th of the 8 flips (one
    pass per draw, as without flips), and f(n) alone becomes the mean over the 8 flips.
    ``overwrite``: ``volume`` (float32) is standardized in place and its raw values are lost, for a
    caller that is done with them (a 512 x 512 x 128 tomogram: 134 MB less at the peak)."""
    release_freed_memory()
    std = Standardized.of(volume, in_place=overwrite)
    flips = config is not None and config.infer_flips
    if config is None or config.pairing != "r2r" or config.infer_draws == 0:
        return std.restore(apply_flipped(network, std.data, margin, device, flips), in_place=True)
    if synthesizer is None:
        synthesizer = capped(cube_mosaic(std.data, config), std.data, config)
    total = np.zeros_like(std.data)
    for k in range(config.infer_draws):
        noisier = synthesizer.sample(1, std.data.shape, seed=config.seed * 7919 + 104_729 + k)[0, 0].numpy()
        noisier *= config.alpha
        noisier += std.data  # n + alpha m_k, in the sample's own buffer
        release_freed_memory()  # the sample's transforms, before the network's tiles need the room
        apply_network(network, noisier, margin, device, axes=FLIPS[k % len(FLIPS)] if flips else (), add_to=total)
        del noisier
    total /= config.infer_draws
    return std.restore(total, in_place=True)


def denoise_halves(
    network: torch.nn.Module, even: np.ndarray, odd: np.ndarray, config: NMSGConfig = NMSG, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """The even/odd noise2noise baseline (:func:`train_even_odd`) applied to each half, in its
    own units: f(half), averaged over the 8 flips with ``config.infer_flips`` (no noise draws:
    those belong to r2r training)."""

    def one(half: np.ndarray) -> np.ndarray:
        std = Standardized.of(half)
        return std.restore(apply_flipped(network, std.data, config.infer_margin, device, config.infer_flips))

    return one(even), one(odd)


@dataclass
class TomoReport:
    """What ``denoise_tomogram`` did: output file, model file (trained or given), seconds, loss log."""

    output: Path
    model: Path | None
    trained: bool
    seconds: float
    log: list[dict] = field(default_factory=list)


@staged("denoise-tomo")
def denoise_tomogram(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str | os.PathLike | None = None,
    model_out: str | os.PathLike | None = None,
    config: NMSGConfig = NMSG,
    oversmoothed: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    work: str | os.PathLike | None = None,
) -> TomoReport:
    """The NMSG stage: train on the tomogram ``src`` (or apply ``model``) and write the denoised
    volume ``dst`` (float32, voxel size kept, written atomically; never over ``src``).
    ``model_out``: where the trained model goes (default: next to ``dst`` as ``STEM.nmsg.pt``).
    ``work``: checkpoint folder (default: ``dst``'s folder / ``STEM.nmsg-work``)."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise InputError(f"{dst}: output would overwrite the input tomogram; choose another output name")
    volume, voxel = read_mrc_volume(src)
    Standardized.of(volume, str(src))  # a constant volume is refused naming the file, before any work
    ensure_writable_dir(dst.parent)
    t0 = time.perf_counter()
    if model is not None:
        network, meta = load_model(model, kind="tomo-denoiser")
        trained = _trained_config(meta, config)
        denoised = denoise_with(network, volume, trained.infer_margin, device, trained, overwrite=True)
        write_mrc(dst, denoised, voxel, [f"nt2c {__version__} denoise-tomo model-sha256={fingerprint(network)}"])
        return TomoReport(dst, Path(model), False, time.perf_counter() - t0)
    smooth = read_mrc_volume(oversmoothed)[0] if oversmoothed is not None else None
    work = Path(work) if work is not None else dst.parent / f"{dst.stem}.nmsg-work"
    result = train_nmsg(volume, config, smooth, work, device, progress)
    save_model_path = Path(model_out) if model_out is not None else dst.parent / f"{dst.stem}.nmsg.pt"
    meta = {
        "kind": "tomo-denoiser",
        "method": "NMSG",
        "voxel_size": voxel,
        "source": str(src),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "seed": config.seed,
        "training": {
            **asdict(config),
            "seconds": round(result.seconds, 1),
            "final": result.log[-1] if result.log else None,
        },
    }
    save_model(save_model_path, result.network.float().cpu(), meta)
    write_loss_log(save_model_path, result.log)
    denoised = denoise_with(
        result.network, volume, config.infer_margin, device, config, result.synthesizer, overwrite=True
    )
    write_mrc(
        dst, denoised, voxel, [f"nt2c {__version__} denoise-tomo NMSG model-sha256={fingerprint(result.network)}"]
    )
    return TomoReport(dst, save_model_path, True, time.perf_counter() - t0, result.log)


def _trained_config(meta: dict, fallback: NMSGConfig) -> NMSGConfig:
    """The inference settings a saved model was trained with (pairing, alpha, draws, noise cubes,
    margin, seed), on top of ``fallback``."""
    from dataclasses import replace

    keys = (
        "pairing",
        "alpha",
        "infer_draws",
        "infer_flips",
        "noise_cube",
        "noise_depth",
        "noise_fraction",
        "noise_cap",
        "infer_margin",
        "seed",
        "tile_depth",
        "tile_size",
    )
    saved = meta.get("training", {})
    if "noise_cube" in saved:  # files made before a setting existed used cubic blocks, without the cap
        saved = {"noise_depth": 0, "noise_cap": False, **saved}
    return replace(fallback, **{k: saved[k] for k in keys if k in saved})
