"""SR3 diffusion restoration of particle images (Zhang, Zhao, Hu, Zhao, ICASSP 2024; after SR3,
Saharia et al. 2022), with the light post-processing U-Net.

Method (the paper's code and settings are not public; the choices below are ours, measured in
``benchmarks/bench_particles.py``):

- **Data**: each particle is normalized by its own noisy image's mean and standard deviation:
  y = (noisy - m) / s is the condition, x0 = k (clean - m) / s the target, with one constant k per
  model (``signal_scale``) that brings the clean signal's typical standard deviation to 0.5.
  Training pairs are augmented with the 8 flips/quarter turns (a flipped projection is a
  projection of the mirrored structure; the CTF is isotropic up to astigmatism).
- **Diffusion** (continuous noise levels, as SR3): x_t = sqrt(gamma) x0 + sqrt(1 - gamma) eps with
  gamma = cos²(pi/2 (t + 0.008) / 1.008), t ~ U(0, 1) per sample; the network sees (y, x_t) and
  sqrt(gamma) and predicts v = sqrt(gamma) eps - sqrt(1 - gamma) x0 (MSE).
- **Restoration**: deterministic DDIM (eta = 0) from pure noise in ``sample_steps`` steps, the
  start noise of particle i seeded by (seed, i, draw), so a restored particle does not depend on
  the batch it was in; ``samples`` > 1 averages that many draws (towards the posterior mean).
- **Post-processing**: a small U-Net trained after the diffusion model, on ``refine_pool``
  training particles restored by the diffusion model, maps (restored, y) to x0 (MSE). Output:
  restored / k * s + m, in the input's units.

Measured on a development set (proteasome, 3 Å/px, SNR 0.13, 400 training steps): 1 / 4 / 8 DDIM
steps gave 22.38 / 21.78 / 21.38 dB without and 22.62 / 22.80 / 22.66 dB with post-processing, so
4 steps are the default; the learning rate (5e-4) and widths were not tuned.

Checkpoints ``WORK/diffusion.ckpt`` and ``WORK/refine.ckpt`` make a stopped training resume to the
same weights (the batches depend only on (seed, step)).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..errors import InputError
from ..images import dihedral
from ..io import ensure_writable_dir, read_mrc, write_json, write_mrc
from ..logs import progress as progress_bar
from ..logs import staged
from ..models.store import fingerprint, load_model_with_extras, save_model
from ..settings import RESTORER, RestorerConfig
from ..training import fit, mixed_precision, write_loss_log
from .invention import InventionReport, invention_check, training_references
from .star import ParticleTable, read_stack

logger = logging.getLogger(__name__)
SCHEDULE_OFFSET = 0.008  # cosine schedule offset s (Nichol & Dhariwal 2021)
GAMMA_RANGE = (1e-4, 0.9999)
TARGET_SIGNAL_STD = 0.5  # typical std of the scaled clean target x0


def gamma_of(t: torch.Tensor) -> torch.Tensor:
    """Signal fraction gamma(t) of the cosine schedule, t in [0, 1] (t = 1: pure noise)."""
    g = torch.cos(0.5 * math.pi * (t + SCHEDULE_OFFSET) / (1 + SCHEDULE_OFFSET)) ** 2
    return g.clamp(*GAMMA_RANGE)


@dataclass
class NormalizedStack:
    """Particle images divided by their own standard deviation after removing their mean."""

    data: np.ndarray  # (N, box, box)
    mean: np.ndarray  # (N,)
    std: np.ndarray  # (N,)

    @classmethod
    def of(cls, images: np.ndarray, name: str = "particles") -> "NormalizedStack":
        images = np.asarray(images, np.float32)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3:
            raise InputError(f"{name}: need a stack of 2-D particle images, got shape {images.shape}")
        if not np.all(np.isfinite(images)):
            raise InputError(f"{name}: holds NaN or Inf values")
        mean = images.mean((1, 2))
        std = images.std((1, 2))
        flat = np.nonzero(std == 0)[0]
        if len(flat):
            raise InputError(f"{name}: particle {int(flat[0]) + 1} is constant (zero variance)")
        return cls((images - mean[:, None, None]) / std[:, None, None], mean, std)

    def restore(self, data: np.ndarray, scale: float) -> np.ndarray:
        return (data / scale * self.std[:, None, None] + self.mean[:, None, None]).astype(np.float32)


@dataclass
class RestorerResult:
    """A trained restorer, its signal scale, loss log and seconds."""

    network: torch.nn.Module
    signal_scale: float
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    references: dict = field(default_factory=dict)  # invention-check references (invention.training_references)


def train_restorer(
    noisy: np.ndarray,
    clean: np.ndarray,
    config: RestorerConfig = RESTORER,
    work: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> RestorerResult:
    """Train the diffusion U-Net, then the post-processing U-Net, on particle pairs (N, box, box)."""
    config = config.validate()
    if np.shape(noisy) != np.shape(clean):
        raise InputError(f"noisy and clean particles differ in shape: {np.shape(noisy)} vs {np.shape(clean)}")
    if len(noisy) < 2:
        raise InputError("need at least 2 training particles")
    y = NormalizedStack.of(noisy, "noisy particles")
    x0 = (np.asarray(clean, np.float32) - y.mean[:, None, None]) / y.std[:, None, None]
    scale = TARGET_SIGNAL_STD / max(float(np.median(x0.std((1, 2)))), 1e-6)
    x0 = x0 * scale
    # empty boxes: the pair's own noise (noisy - clean) as the condition, an empty box as the target
    empty = NormalizedStack.of(np.asarray(noisy, np.float32) - np.asarray(clean, np.float32), "noise").data
    references = training_references(np.asarray(clean, np.float32))  # stored with the model (invention check)
    work_dir = ensure_writable_dir(work) if work is not None else None
    t0 = time.perf_counter()
    n = len(x0)

    def batch(step: int):
        rng = np.random.default_rng([config.seed, 29, step])
        idx = rng.integers(0, n, config.batch_size)
        turns = rng.integers(0, 8, config.batch_size)
        blank = rng.random(config.batch_size) < config.empty_fraction
        yb = np.stack([dihedral((empty if b else y.data)[i], k) for i, k, b in zip(idx, turns, blank)])[:, None]
        xb = np.stack([dihedral(x0[i], k) * (not b) for i, k, b in zip(idx, turns, blank)])[:, None]
        eps = rng.standard_normal(xb.shape, dtype=np.float32)
        t = rng.random(config.batch_size).astype(np.float32)
        return (
            torch.from_numpy(np.ascontiguousarray(yb)),
            torch.from_numpy(np.ascontiguousarray(xb)),
            torch.from_numpy(eps),
            torch.from_numpy(t),
        )

    if config.method == "unet":  # the U-Net baseline: the same batches, MSE to the clean target

        def unet_loss(network, yb, xb, eps, t):
            return {"loss": F.mse_loss(network(yb).float(), xb)}

        ckpt = work_dir / "unet.ckpt" if work_dir else None
        result = fit(
            config.architecture(), batch, unet_loss, config.diffusion_loop(), ckpt, device, progress, stop_after,
            desc="particle U-Net",
        )  # fmt: skip
        log = [{"phase": "unet", **row} for row in result.log]
        return RestorerResult(result.network.eval(), scale, log, time.perf_counter() - t0, references)

    def loss_fn(network, yb, xb, eps, t):
        g = gamma_of(t)[:, None, None, None]
        state = g.sqrt() * xb + (1 - g).sqrt() * eps
        target = g.sqrt() * eps - (1 - g).sqrt() * xb
        return {"loss": F.mse_loss(network.velocity(yb, state, g.sqrt().flatten()).float(), target)}

    ckpt = work_dir / "diffusion.ckpt" if work_dir else None
    result = fit(
        config.architecture(),
        batch,
        loss_fn,
        config.diffusion_loop(),
        ckpt,
        device,
        progress,
        stop_after,
        desc="sr3 diffusion",
    )
    network, log = result.network, [{"phase": "diffusion", **row} for row in result.log]
    stopped = stop_after is not None and stop_after < config.steps
    if config.refine_steps > 0 and not stopped:
        pool = np.arange(min(config.refine_pool, n))
        blanks = pool[: int(round(len(pool) * config.empty_fraction))]
        condition = np.concatenate([y.data[pool], empty[blanks]])
        target = np.concatenate([x0[pool], np.zeros_like(x0[blanks])])
        logger.info(
            f"post-processing: restoring {len(pool)} training particles and {len(blanks)} empty boxes "
            f"with {config.sample_steps} DDIM steps"
        )
        restored = sample(network, condition, config, np.arange(len(condition)), device, progress=False)
        refined = _train_refine(
            network,
            restored,
            condition,
            target,
            config,
            work_dir,
            device,
            progress,
            None if stop_after is None else stop_after - config.steps,
        )
        log += [{"phase": "refine", **row} for row in refined.log]
    return RestorerResult(network.eval(), scale, log, time.perf_counter() - t0, references)


def _train_refine(
    network,
    restored: np.ndarray,
    condition: np.ndarray,
    target: np.ndarray,
    config: RestorerConfig,
    work_dir: Path | None,
    device: str,
    progress: bool,
    stop_after: int | None,
):
    n = len(restored)

    def batch(step: int):
        rng = np.random.default_rng([config.seed, 31, step])
        idx = rng.integers(0, n, config.batch_size)
        turns = rng.integers(0, 8, config.batch_size)
        stack = [
            np.stack([dihedral(a[i], k) for i, k in zip(idx, turns)])[:, None] for a in (restored, condition, target)
        ]
        return tuple(torch.from_numpy(np.ascontiguousarray(s)) for s in stack)

    def loss_fn(refine, rb, yb, xb):
        return {"loss": F.mse_loss((rb + refine(torch.cat([rb, yb], 1))).float(), xb)}

    ckpt = work_dir / "refine.ckpt" if work_dir else None
    return fit(
        network.refine,
        batch,
        loss_fn,
        config.refine_loop(),
        ckpt,
        device,
        progress,
        stop_after,
        desc="sr3 post-processing",
    )


def start_noise(indices: Sequence[int], box: int, seed: int, draw: int) -> np.ndarray:
    """The DDIM start noise of the particles ``indices`` (N, 1, box, box): a function of
    (seed, particle index, draw) only."""
    return np.stack(
        [
            np.random.default_rng([seed, 37, int(i), draw]).standard_normal((1, box, box), dtype=np.float32)
            for i in indices
        ]
    )


@torch.inference_mode()
def sample(
    network,
    condition: np.ndarray,
    config: RestorerConfig,
    indices: Sequence[int],
    device: str = "cpu",
    progress: bool = True,
    variance: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """DDIM restoration (scaled units, (N, box, box)) of normalized noisy particles ``condition``,
    ``config.samples`` draws averaged, batches of ``config.batch``; ``indices``: the particles'
    numbers (they seed the start noise). ``variance``: also the per-pixel variance over the draws
    (unbiased; needs ``samples`` >= 2)."""
    if variance and config.samples < 2:
        raise InputError("a per-particle variance needs at least 2 draws (--samples 2 or more)")
    dev = torch.device(device)
    network = network.to(dev).eval()
    autocast, _ = mixed_precision(dev, config.amp)
    n, box = condition.shape[0], condition.shape[-1]
    out = np.zeros((n, box, box), np.float32)
    squares = np.zeros((n, box, box), np.float64) if variance else None
    times = torch.linspace(1.0, 0.0, config.sample_steps + 1)
    gammas = gamma_of(times)
    starts = range(0, n, config.batch)
    for start in progress_bar(starts, desc="restoring", unit="batch", disable=not progress):
        stop = min(n, start + config.batch)
        y = torch.from_numpy(np.ascontiguousarray(condition[start:stop]))[:, None].to(dev)
        for draw in range(config.samples):
            x = torch.from_numpy(start_noise(indices[start:stop], box, config.seed, draw)).to(dev)
            for k in range(config.sample_steps):
                g, g_next = float(gammas[k]), float(gammas[k + 1])
                level = torch.full((len(x),), math.sqrt(g), device=dev)
                with autocast():
                    v = network.velocity(y, x, level).float()
                x0 = math.sqrt(g) * x - math.sqrt(1 - g) * v
                eps = math.sqrt(1 - g) * x + math.sqrt(g) * v
                x = math.sqrt(g_next) * x0 + math.sqrt(1 - g_next) * eps
            draw_x0 = x0[:, 0].float().cpu().numpy()
            out[start:stop] += draw_x0 / config.samples
            if squares is not None:
                squares[start:stop] += draw_x0.astype(np.float64) ** 2
    if squares is None:
        return out
    spread = (squares - config.samples * out.astype(np.float64) ** 2) / (config.samples - 1)
    return out, np.maximum(spread, 0).astype(np.float32)


@torch.inference_mode()
def unet_pass(network, condition: np.ndarray, device: str = "cpu", batch: int = 64) -> np.ndarray:
    """The U-Net restorer on normalized particles (scaled units)."""
    dev = torch.device(device)
    network = network.to(dev).eval()
    out = np.empty_like(condition)
    for start in range(0, len(condition), batch):
        y = torch.from_numpy(np.ascontiguousarray(condition[start : start + batch]))[:, None].to(dev)
        out[start : start + batch] = network(y)[:, 0].float().cpu().numpy()
    return out


@torch.inference_mode()
def refine(network, restored: np.ndarray, condition: np.ndarray, device: str = "cpu", batch: int = 64) -> np.ndarray:
    """The post-processing U-Net applied to restored particles (scaled units)."""
    dev = torch.device(device)
    out = np.empty_like(restored)
    for start in range(0, len(restored), batch):
        r = torch.from_numpy(np.ascontiguousarray(restored[start : start + batch]))[:, None].to(dev)
        y = torch.from_numpy(np.ascontiguousarray(condition[start : start + batch]))[:, None].to(dev)
        out[start : start + batch] = network.refined(r, y)[:, 0].float().cpu().numpy()
    return out


def restore_images(
    network,
    images: np.ndarray,
    signal_scale: float,
    config: RestorerConfig,
    indices: Sequence[int] | None = None,
    device: str = "cpu",
    post: bool = True,
    progress: bool = True,
    variance: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Restore particle images (N, box, box) in their own units: DDIM sampling, then (``post``)
    the post-processing U-Net. ``variance``: also each pixel's variance over the ``samples`` draws
    of the diffusion model (before post-processing), in the images' units squared."""
    norm = NormalizedStack.of(images)
    if config.method == "unet":
        if variance:
            raise InputError("a U-Net restorer gives one image per particle: no variance over draws")
        return norm.restore(unet_pass(network, norm.data, device, config.batch), signal_scale)
    indices = np.arange(len(norm.data)) if indices is None else np.asarray(indices)
    restored = sample(network, norm.data, config, indices, device, progress, variance)
    if variance:
        restored, spread = restored
    if post:
        restored = refine(network, restored, norm.data, device, config.batch)
    if not variance:
        return norm.restore(restored, signal_scale)
    units = (norm.std / signal_scale)[:, None, None] ** 2
    return norm.restore(restored, signal_scale), (spread * units).astype(np.float32)


# --- the stages: files in, files out ---------------------------------------------------------------


def save_restorer(
    path: str | os.PathLike, result: RestorerResult, config: RestorerConfig, pixel_size: float, box: int, source: dict
) -> Path:
    """Write a trained restorer (kind 'particle-restorer') and its loss log next to it."""
    meta = {
        "kind": "particle-restorer",
        "method": "U-Net" if config.method == "unet" else "SR3",
        "pixel_size": pixel_size,
        "box": box,
        "signal_scale": result.signal_scale,
        "invention_check": bool(result.references),  # the file holds training references
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "seed": config.seed,
        "source": source,
        "training": {**asdict(config), "seconds": round(result.seconds, 1)},
    }
    path = save_model(path, result.network.float().cpu(), meta, result.references)
    if result.log:
        keys = ["phase", "step"] + sorted({k for row in result.log for k in row} - {"phase", "step"})
        write_loss_log(path, result.log, keys)
    return path


@staged("train-restorer")
def train_restorer_files(
    pairs: str | os.PathLike,
    output: str | os.PathLike,
    config: RestorerConfig = RESTORER,
    work: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """The ``train-restorer`` stage: train on a simulated particle folder (``particles.mrcs`` noisy,
    ``clean.mrcs`` truth, from :func:`nt2c_core.particles.simulate.simulate_particle_files`) and write
    the model ``output`` (checkpoints in ``work``, default ``OUTPUT_STEM.sr3-work``)."""
    folder = Path(pairs)
    noisy, pixel = read_mrc(folder / "particles.mrcs", allow_stack=True)
    clean, _ = read_mrc(folder / "clean.mrcs", allow_stack=True)
    output = Path(output)
    work = Path(work) if work is not None else output.parent / f"{output.stem}.sr3-work"
    result = train_restorer(noisy, clean, config, work, device, progress, stop_after)
    planned = config.steps + (config.refine_steps if config.method == "sr3" else 0)
    if stop_after is not None and stop_after < planned:
        return work
    return save_restorer(output, result, config, pixel, int(noisy.shape[-1]), {"pairs": str(folder)})


@dataclass
class RestoreReport:
    """What ``restore_particles`` wrote: the output stacks (and STAR), particle count, seconds, the
    invention check (None when off or impossible) and the variance stacks (``uncertainty``)."""

    outputs: list[Path]
    star: Path | None
    particles: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    invention: InventionReport | None = None
    variances: list[Path] = field(default_factory=list)


class Restorer:
    """A loaded restorer with its inference settings: what ``restore-particles`` and the Scipion
    protocol call. ``overrides``: sample_steps / samples / batch / seed / invention_images /
    invention_threshold replacing the model's; ``post``: apply the post-processing U-Net."""

    def __init__(self, path: str | os.PathLike, overrides: dict | None = None, post: bool = True, device: str = "cpu"):
        self.path = Path(path)
        self.network, self.metadata, extras = load_model_with_extras(path, device, kind="particle-restorer")
        self.references = extras.get("invention_references"), extras.get("invention_mean")
        self.config = restorer_config(self.metadata, overrides)
        self.scale = float(self.metadata.get("signal_scale", 0) or 0)
        if not self.scale > 0:
            raise InputError(f"{path}: restorer metadata has no signal_scale")
        self.post, self.device = post, device
        if self.config.method == "unet":
            self.label = f"nt2c {__version__} restore-particles U-Net model-sha256={fingerprint(self.network)}"
        else:
            self.label = (
                f"nt2c {__version__} restore-particles SR3 model-sha256={fingerprint(self.network)} "
                f"steps={self.config.sample_steps} samples={self.config.samples} post={int(post)}"
            )

    def restore(
        self,
        images: np.ndarray,
        indices: Sequence[int] | None = None,
        progress: bool = True,
        variance: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Restored particles (N, box, box), float32, in the images' units; ``indices`` (default
        0..N-1) number the particles for the start noise (give a stack's offset in a larger set);
        ``variance``: also the per-pixel variance over the draws (needs ``samples`` >= 2)."""
        return restore_images(
            self.network, images, self.scale, self.config, indices, self.device, self.post, progress, variance
        )

    def check_invention(self, images: np.ndarray) -> InventionReport | None:
        """The invention check (:mod:`nt2c_core.particles.invention`) on noise matched to ``images``
        (a sample of the particles to restore); None, with a warning, when the model file holds no
        training references, or when the check is off (``invention_images`` 0)."""
        if self.config.invention_images == 0:
            logger.info("invention check off (invention_images 0): restored images are not checked")
            return None
        references, mean = self.references
        if references is None or mean is None:
            logger.warning(
                f"{self.path}: holds no training references (written before nt2c checked invention): "
                "restored images cannot be checked for invented structure; retrain the restorer"
            )
            return None
        logger.info(f"invention check: restoring {self.config.invention_images} images of noise matched to the data")
        return invention_check(
            lambda noise: self.restore(noise, progress=False),
            images,
            references,
            mean,
            self.config.invention_images,
            self.config.seed,
            self.config.invention_threshold,
        )

    def check_pixel(self, pixel: float, path: str | os.PathLike) -> list[str]:
        """A warning (logged and returned) when ``pixel`` [Å] is outside 0.8-1.25x the model's."""
        trained = float(self.metadata.get("pixel_size") or 0)
        if trained > 0 and pixel > 0 and not 0.8 <= pixel / trained <= 1.25:
            message = (
                f"{path}: pixel size {pixel:.3g} Å differs from the restorer's {trained:.3g} Å by more than "
                "25 %; train a restorer at this pixel size"
            )
            logger.warning(message)
            return [message]
        return []


def restorer_config(meta: dict, overrides: dict | None = None) -> RestorerConfig:
    """The inference settings of a saved model (sample steps, samples, seed, batch), with ``overrides``."""
    from dataclasses import replace

    saved = meta.get("training", {})
    keys = ("method", "sample_steps", "samples", "seed", "batch", "amp", "invention_images", "invention_threshold")
    config = replace(RESTORER, **{k: saved[k] for k in keys if k in saved})
    return replace(config, **{k: v for k, v in (overrides or {}).items() if v is not None}).validate()


def unique_names(paths: Sequence[Path], suffix: str) -> list[str]:
    """Output file names for ``paths``: ``STEM + suffix``, prefixed by the input's position when
    two inputs share a stem (two ``particles.mrcs`` from different folders never collide)."""
    stems = [p.stem for p in paths]
    return [f"{s}{suffix}" if stems.count(s) == 1 else f"{i + 1:03d}_{s}{suffix}" for i, s in enumerate(stems)]


@staged("restore-particles")
def restore_particles(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    model: str | os.PathLike,
    overrides: dict | None = None,
    post: bool = True,
    device: str = "cpu",
    progress: bool = True,
    uncertainty: bool = False,
    check_only: bool = False,
) -> RestoreReport:
    """The ``restore-particles`` stage: restore MRC stacks (each to ``OUTPUT/STEM_restored.mrcs``)
    or one RELION particle STAR file (to ``OUTPUT/NAME.star`` with every column kept and only
    ``rlnImageName`` rewritten, stacks in ``OUTPUT/Particles/``). Float32, the input's pixel
    size, atomic writes, never over an input.

    First the invention check restores noise matched to the first stack and writes
    ``OUTPUT/invention.json``; a flagged restorer is said in the log, the report's warnings and
    every output stack's labels. ``uncertainty``: also ``STEM_variance.mrcs`` per stack, the
    variance over the draws (``samples`` >= 2). ``check_only``: the invention check alone (no
    restored stacks)."""
    t0 = time.perf_counter()
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise InputError("no particle stack or STAR file given")
    stars = [p for p in inputs if p.suffix.lower() == ".star"]
    if stars and len(inputs) > 1:
        raise InputError("give either one STAR file or MRC stacks, not both")
    table = ParticleTable.read(stars[0]) if stars else None
    if table is not None:
        table.check_images()  # before any output is made
    restorer = Restorer(model, overrides, post, device)
    if uncertainty and restorer.config.samples < 2:
        raise InputError(
            f"--uncertainty needs at least 2 draws per particle (--samples), not {restorer.config.samples}"
        )
    out_dir = ensure_writable_dir(output)
    warnings: list[str] = []
    variances: list[Path] = []
    refs = table.image_refs() if stars else []
    stacks = sorted({s for _, s in refs}, key=[s for _, s in refs].index)
    paths = [table.resolve(s) for s in stacks] if stars else inputs
    first = {paths[0]: read_stack(paths[0])}  # read once: the check's spectrum, then restored

    def stack_of(path: Path) -> tuple[np.ndarray, float]:
        return first.pop(path) if path in first else read_stack(path)  # (the first stack not kept after)

    invention = restorer.check_invention(first[paths[0]][0][:512])
    labels = [restorer.label]
    if invention is not None:
        write_json(_never_input(out_dir / "invention.json", inputs + paths), invention.to_dict())
        labels.append(invention.label())
        if invention.flagged:
            warnings.append(invention.message())
    if check_only:
        if invention is None:
            raise InputError(f"{model}: the invention check cannot run (see the log): nothing to do")
        return RestoreReport([], None, 0, time.perf_counter() - t0, warnings, invention)

    def write(dst: Path, images: np.ndarray, pixel: float, indices: np.ndarray) -> Path:
        result = restorer.restore(images, indices, progress, uncertainty)
        restored, spread = result if uncertainty else (result, None)
        if spread is not None:
            twin = dst.with_name(dst.name.replace("_restored.mrcs", "_variance.mrcs"))
            variances.append(write_mrc(_never_input(twin, inputs + paths), spread, pixel, labels + ["variance"]))
        return write_mrc(_never_input(dst, inputs + paths), restored, pixel, labels)

    if stars:
        names = unique_names(paths, "_restored.mrcs")
        sub = ensure_writable_dir(out_dir / "Particles")
        outputs, new_names, total = [], [None] * len(refs), 0
        for stack, path, name in zip(stacks, paths, names):
            images, pixel = stack_of(path)
            rows = [i for i, (_, s) in enumerate(refs) if s == stack]
            index = [refs[i][0] for i in rows]
            if max(index) >= len(images):
                raise InputError(f"{stars[0]}: refers to image {max(index) + 1} of {path}, which holds {len(images)}")
            warnings += restorer.check_pixel(pixel, path)
            outputs.append(write(sub / name, images[index], pixel, np.arange(total, total + len(rows))))
            total += len(rows)
            for j, i in enumerate(rows):
                new_names[i] = f"{j + 1:06d}@Particles/{name}"
        star_out = _never_input(out_dir / stars[0].name, inputs)
        table.with_images(new_names).write(star_out)
        return RestoreReport(outputs, star_out, total, time.perf_counter() - t0, warnings, invention, variances)
    outputs, total = [], 0
    for path, name in zip(inputs, unique_names(inputs, "_restored.mrcs")):
        images, pixel = stack_of(path)
        warnings += restorer.check_pixel(pixel, path)
        outputs.append(write(out_dir / name, images, pixel, np.arange(total, total + len(images))))
        total += len(images)
    return RestoreReport(outputs, None, total, time.perf_counter() - t0, warnings, invention, variances)


def _never_input(dst: Path, inputs: Sequence[Path]) -> Path:
    if any(dst.resolve() == p.resolve() for p in inputs):
        raise InputError(f"{dst}: output would overwrite an input; choose another output folder")
    return dst
