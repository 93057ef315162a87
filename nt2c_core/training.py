"""Training: :func:`fit`, the one loop every network of nt2c trains in (the micrograph U-Nets
through :func:`train_denoiser`, the noise GAN, NMSG and its noise2noise baseline, the SR3 restorer
and its refiner): Adam, cosine learning-rate decay, AMP on CUDA, log rows through
:mod:`nt2c_core.logs`, divergence checks, atomic checkpoints and exact resume.

Checkpoint ``MODEL.ckpt`` (every ``checkpoint_every`` steps) holds the network, optimizer, scaler
and loss log; as the crops of each step depend only on (seed, step) (``pairs.PairSet.sample``),
``resume=True`` continues a stopped run to the same result as an uninterrupted one. The loss log
is written as ``MODEL.loss.csv`` and ``MODEL.loss.png``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import layout
from .device import release_freed_memory
from .errors import InputError
from .io import atomic_write, ensure_writable_dir
from .logs import progress as progress_bar
from .metrics import psnr
from .models.registry import build
from .models.store import all_finite, load_model, save_model, save_torch
from .normalization import NORMALIZATION
from .pairs import PairSet
from .plots import loss_curve
from .settings import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where the model went (None when stopped early), and how it scored on the validation
    micrographs (PSNR, dB)."""

    model_path: Path | None
    steps: int
    val_psnr: float | None
    raw_val_psnr: float | None
    seconds: float
    log: list[dict] = field(default_factory=list)


def checkpoint_path(model_path: str | os.PathLike) -> Path:
    return layout.checkpoint(model_path)


def train_denoiser(
    pairs: PairSet,
    output: str | os.PathLike,
    config: TrainConfig | None = None,
    init: str | os.PathLike | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    metadata: dict | None = None,
    stop_after: int | None = None,
    transform=None,
    extra_loss: Callable[[nn.Module, int], torch.Tensor] | None = None,
) -> TrainResult:
    """Train a U-Net on ``pairs`` (noisy -> clean) and write the model file ``output``.

    ``init``: a model file whose architecture and weights start the run (fine from coarse).
    ``resume``: continue from ``output``.ckpt when it exists. ``metadata``: extra fields recorded
    in the model file (acquisition, stage...). ``stop_after``: stop at this step with a checkpoint
    and no model file, as an interrupted or time-boxed run does (``resume`` continues it).
    ``transform(x, y, key) -> (x, y)``: rewrites each batch (and each validation micrograph) before
    use, e.g. :class:`nt2c_core.noise.reweight.NoiseTransfer` for the fine denoiser; ``key`` is the
    step, so resumed runs see the same data. ``extra_loss(network, step)``: a term added to each
    step's loss (e.g. :class:`nt2c_core.consistency.RealConsistency`), logged as ``consistency``."""
    config = (config or TrainConfig()).validate().check_pairs(pairs)
    output = Path(output)
    ensure_writable_dir(output.parent)
    dev = torch.device(device)
    train, val = pairs.split(config.val_fraction)
    torch.manual_seed(config.seed)
    network = load_model(init, "cpu", kind="denoiser")[0] if init else build(config.architecture)
    autocast, _ = mixed_precision(dev, config.amp)
    if transform is not None:
        val = _transformed(val, transform)
    raw_val = _raw_psnr(val)

    def batch(step: int):
        pair = train.sample(np.random.default_rng([config.seed, step]), config.batch_size, config.crop)
        if transform is not None:
            pair = transform(*pair, step)
        return torch.from_numpy(pair[0]), torch.from_numpy(pair[1]), step

    def loss_fn(net, x, y, step: int):
        loss = nn.functional.mse_loss(net(x).float(), y)
        if extra_loss is None:
            return {"loss": loss}
        extra = extra_loss(net, step)
        return {"loss": loss + extra, "consistency": extra}

    def validate(net) -> dict:
        return {"val_psnr": _val_psnr(net, val, dev, autocast)}

    fitted = fit(
        network,
        batch,
        loss_fn,
        config,
        checkpoint_path(output),
        device,
        progress,
        stop_after,
        desc="train",
        resume=resume,
        validate=validate,
        describe=lambda row: _format_row(row, raw_val),
        memory_format=torch.channels_last,
    )
    log, seconds = fitted.log, fitted.seconds
    write_loss_log(output, log)
    if fitted.steps < config.steps:  # stopped early: a checkpoint, no model file
        return TrainResult(None, fitted.steps, None, raw_val, seconds, log)
    network = fitted.network
    val_psnr = log[-1]["val_psnr"] if log else None
    meta = {
        "kind": "denoiser",
        "normalization": NORMALIZATION,
        "pixel_size": pairs.pixel_size,
        "seed": config.seed,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "training": {
            **asdict(config),
            "init": str(init) if init else None,
            "train_micrographs": train.names,
            "val_micrographs": val.names,
            "val_psnr_db": val_psnr,
            "raw_val_psnr_db": raw_val,
            "seconds_this_run": round(seconds, 1),
        },
        **(metadata or {}),
    }
    save_model(output, network.float().cpu(), meta)
    loss_curve(layout.loss_png(output), log)
    return TrainResult(output, config.steps, val_psnr, raw_val, seconds, log)


def _diverged(step: int, loss: float, config, ckpt: Path | None) -> InputError:
    """The error for a run whose loss or weights stopped being finite; the checkpoint on disk
    (if any) is from before and is kept, and no model file is written."""
    kept = (
        f"the last good checkpoint {ckpt} is kept"
        if ckpt is not None and ckpt.exists()
        else "no checkpoint was written"
    )
    return InputError(
        f"training diverged at step {step} (loss {loss:g}; weights or validation not finite): "
        f"lower the learning rate (--lr / lr, now {config.lr:g}) and start again without resuming; "
        f"{kept}, no model file was written"
    )


def mixed_precision(dev: torch.device, enabled: bool):
    """(autocast context factory, grad scaler): bf16 (or fp16 with scaling) on CUDA, off on CPU."""
    if dev.type != "cuda" or not enabled:
        return contextlib.nullcontext, torch.amp.GradScaler("cuda", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)


def _transformed(val: PairSet, transform) -> PairSet:
    """Validation pairs passed once through ``transform`` with fixed keys (same every run)."""
    noisy, clean = [], []
    for i, (x, y) in enumerate(zip(val.noisy, val.clean)):
        nx, ny = transform(x[None, None], y[None, None], 10**9 + i)
        noisy.append(nx[0, 0])
        clean.append(ny[0, 0])
    return PairSet(noisy, clean, val.names, val.pixel_size, val.provenance)


def _raw_psnr(val: PairSet) -> float | None:
    return float(np.mean([psnr(x, y) for x, y in zip(val.noisy, val.clean)])) if len(val) else None


@torch.no_grad()
def _val_psnr(network: nn.Module, val: PairSet, dev: torch.device, autocast) -> float | None:
    if not len(val):
        return None
    network.eval()
    scores = []
    for x, y in zip(val.noisy, val.clean):
        with autocast():
            out = network(torch.from_numpy(x)[None, None].to(dev)).float()[0, 0].cpu().numpy()
        scores.append(psnr(out, y))
    network.train()
    return float(np.mean(scores))


def _format_row(row: dict, raw_val: float | None) -> str:
    text = f"step {row['step']}: loss {row['loss']:.5f}, lr {row['lr']:.2e}"
    if "consistency" in row:
        text += f", consistency {row['consistency']:.5f}"
    if row["val_psnr"] is not None:
        text += f", validation PSNR {row['val_psnr']:.2f} dB (raw {raw_val:.2f} dB)"
    return text


def write_loss_log(model_path: Path, log: list[dict], fieldnames: list[str] | None = None) -> Path:
    """``MODEL.loss.csv`` from log rows (columns: ``fieldnames``, else the first row's keys)."""
    path = layout.loss_csv(model_path)
    fieldnames = fieldnames or (list(log[0]) if log else ["step", "loss", "lr", "val_psnr"])
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(log)
    return path


@dataclass
class FitResult:
    """A trained network, its loss log, the steps done (fewer than asked when stopped early) and
    the time of this run; ``synthesizer``: the noise it was trained with (NMSG), when there is one."""

    network: nn.Module
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    synthesizer: object = None
    steps: int = 0


def learning_rate(step: int, config) -> float:
    """Adam's learning rate at ``step``: a cosine from ``config.lr`` down to ``lr *
    final_lr_fraction`` (5 % where the settings have no such field) at the last step."""
    t = min(step / max(config.steps - 1, 1), 1.0)
    low = config.lr * getattr(config, "final_lr_fraction", 0.05)
    return low + 0.5 * (config.lr - low) * (1 + math.cos(math.pi * t))


def fit(
    architecture: dict | nn.Module,
    batch: Callable[[int], tuple[torch.Tensor | None, ...]],
    loss_fn: Callable[..., dict[str, torch.Tensor]],
    config,
    checkpoint: Path | None,
    device: str,
    progress: bool,
    stop_after: int | None = None,
    desc: str = "training",
    resume: bool = True,
    validate: Callable[[nn.Module], dict] | None = None,
    describe: Callable[[dict], str] | None = None,
    memory_format: torch.memory_format = torch.preserve_format,
    companions: dict | None = None,
) -> FitResult:
    """The one training loop of nt2c's networks (the micrograph U-Nets, NMSG and its even/odd
    baseline, the SR3 restorer and its refiner): a network built from ``architecture`` after
    seeding (same seed, same start), or a network given as built; ``batch(step)`` -> tensors that
    depend only on (seed, step); ``loss_fn(network, *tensors)`` -> {'loss': the objective, other
    terms to log}, run under autocast on CUDA (bf16, or fp16 with gradient scaling).

    Adam with the cosine :func:`learning_rate`; every ``config.log_every`` steps (``val_every`` for
    the micrograph denoisers) a log row of the mean terms, the learning rate and ``validate(network)``
    (e.g. the validation PSNR), logged as ``describe(row)``; a checkpoint every
    ``checkpoint_every`` steps (network, optimizer, scaler, log and the terms since the last row:
    with ``resume`` a stopped run continues from it to the same weights as an uninterrupted one; a
    checkpoint made with other settings is refused). ``stop_after``: stop at that step, with a
    checkpoint. ``memory_format``: the network's and its 4-D/5-D batches' layout (channels-last
    for the 2-D U-Nets, channels-last-3d for the 3-D one: on CPU 1.3-2x faster convolutions than
    the default layout). A loss or weights that stop being finite raise InputError naming the step and
    ``--lr``, the last good checkpoint kept. ``companions``: other modules and optimizers the
    loss function updates itself (the GAN's critic and its Adam), saved, checked and resumed with
    the network. ``batch`` may return non-tensors (e.g. the step), passed to ``loss_fn`` as they are."""
    dev = torch.device(device)
    torch.manual_seed(config.seed)
    network = architecture if isinstance(architecture, nn.Module) else build(architecture)
    network = network.to(dev, memory_format=memory_format)
    batch_dims = {torch.channels_last: 4, torch.channels_last_3d: 5}.get(memory_format)
    network.train()
    optimizer = torch.optim.Adam(
        network.parameters(), lr=config.lr, betas=tuple(getattr(config, "betas", (0.9, 0.999)))
    )
    autocast, scaler = mixed_precision(dev, config.amp)
    every = getattr(config, "log_every", None) or config.val_every
    companions = companions or {}
    start, log, running = 0, [], []
    if resume and checkpoint is not None and checkpoint.exists():
        start, log, running = _load_checkpoint(checkpoint, network, optimizer, scaler, config, companions)
    t0 = time.perf_counter()
    bar = progress_bar(
        range(start, config.steps), total=config.steps, desc=desc, initial=start, unit="step", disable=not progress
    )
    done = start
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        tensors = [_to(a, dev, memory_format, batch_dims) for a in batch(step)]
        with autocast():
            terms = loss_fn(network, *tensors)
        values = {k: float(v.item()) for k, v in terms.items()}
        optimizer.zero_grad(set_to_none=True)
        if not all(math.isfinite(v) for v in values.values()):
            raise _diverged(step + 1, values["loss"], config, checkpoint)
        scaler.scale(terms["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        running.append(values)
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        done = step + 1
        if done % every == 0 or done == config.steps:
            row = {"step": done, **{k: float(np.mean([r[k] for r in running])) for k in running[0]}}
            row["lr"] = learning_rate(step, config)
            if validate is not None:
                row.update(validate(network))
                network.train()
            log.append(row)
            running = []
            logger.info(describe(row) if describe else f"{desc} step {done}: " + _terms(row))
        stopping = stop_after is not None and done >= stop_after
        if checkpoint is not None and (done % config.checkpoint_every == 0 or done == config.steps or stopping):
            last = [v for k, v in (log[-1] if log else {}).items() if isinstance(v, float)]
            modules = [network, *(m for m in companions.values() if isinstance(m, nn.Module))]
            if not all(all_finite(m.state_dict()) for m in modules) or not all(math.isfinite(v) for v in last):
                raise _diverged(done, float("nan"), config, checkpoint)
            save_torch(
                checkpoint,
                {
                    "format": "nt2c-checkpoint",
                    "version": 2,
                    "step": done,
                    "log": log,
                    "running": running,
                    "config": _jsonable(asdict(config)),
                    "architecture": _jsonable(getattr(network, "config", None)),
                    "network": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "companions": {name: c.state_dict() for name, c in companions.items()},
                },
            )
        if stopping:
            break
    release_freed_memory()  # what comes next (inference, sampling) allocates blocks of other sizes
    return FitResult(network.eval(), log, time.perf_counter() - t0, steps=done)


def _to(value, dev: torch.device, memory_format, dims: int | None):
    """A batch item on the device (in the network's memory format when it has that many dims)."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(dev, memory_format=memory_format if value.dim() == dims else torch.preserve_format)


def _terms(row: dict) -> str:
    return ", ".join(f"{k} {v:.5f}" if k != "lr" else f"lr {v:.2e}" for k, v in row.items() if k != "step")


def _jsonable(value):
    """Settings as plain JSON types (tuples as lists), as a checkpoint stores and compares them."""
    return json.loads(json.dumps(value))


def _load_checkpoint(path: Path, network, optimizer, scaler, config, companions: dict) -> tuple[int, list, list]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: unreadable checkpoint ({exc}); delete it to start again") from exc
    if payload.get("version") != 2:
        raise InputError(
            f"{path}: checkpoint from an earlier nt2c version; start again without resuming (or delete it)"
        )
    old = payload["config"]
    mismatch = [k for k, v in _jsonable(asdict(config)).items() if k != "steps" and old.get(k) != v]
    if payload.get("architecture") != _jsonable(getattr(network, "config", None)):
        mismatch.append("architecture")
    if mismatch:
        raise InputError(
            f"{path}: checkpoint was made with other settings ({', '.join(mismatch)}); use the same "
            "settings to resume, or start without --resume"
        )
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    for name, companion in companions.items():
        companion.load_state_dict(payload["companions"][name])
    return int(payload["step"]), list(payload["log"]), list(payload["running"])
