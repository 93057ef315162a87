"""Denoiser training: a plain PyTorch loop with L2 loss, Adam, cosine learning-rate decay,
validation PSNR, atomic checkpoints and exact resume.

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
    network = network.to(dev, memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    schedule = lambda step: _cosine(step, config)  # noqa: E731
    autocast, scaler = mixed_precision(dev, config.amp)
    start, log, running = 0, [], []
    ckpt = checkpoint_path(output)
    if resume and ckpt.exists():
        start, log, running = _load_checkpoint(ckpt, network, optimizer, scaler, config)
    t0 = time.perf_counter()
    if transform is not None:
        val = _transformed(val, transform)
    raw_val = _raw_psnr(val)
    bar = progress_bar(
        range(start, config.steps), total=config.steps, desc="train", initial=start, unit="step", disable=not progress
    )
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        batch = train.sample(np.random.default_rng([config.seed, step]), config.batch_size, config.crop)
        if transform is not None:
            batch = transform(*batch, step)
        x, y = (torch.from_numpy(a).to(dev, memory_format=torch.channels_last) for a in batch)
        with autocast():
            loss = nn.functional.mse_loss(network(x).float(), y)
            extra = extra_loss(network, step) if extra_loss is not None else None
        total = loss if extra is None else loss + extra
        values = [loss.item()] + ([extra.item()] if extra is not None else [])
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(sum(values)):
            raise _diverged(step + 1, sum(values), config, ckpt)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        running.append(values if extra is not None else values[0])
        bar.set_postfix(loss=f"{values[0]:.4f}")
        done = step + 1
        if done % config.val_every == 0 or done == config.steps:
            terms = np.mean(running, axis=0)
            row = {
                "step": done,
                "loss": float(np.atleast_1d(terms)[0]),
                "lr": schedule(step),
                "val_psnr": _val_psnr(network, val, dev, autocast),
            }
            if extra_loss is not None:
                row["consistency"] = float(terms[1])
            log.append(row)
            running = []
            logger.info(_format_row(row, raw_val))
        stopping = stop_after is not None and done >= stop_after
        if done % config.checkpoint_every == 0 or done == config.steps or stopping:
            if not all_finite(network.state_dict()) or not math.isfinite(row_psnr(log)):
                raise _diverged(done, float("nan"), config, ckpt)
            _save_checkpoint(ckpt, network, optimizer, scaler, config, done, log, running)
            write_loss_log(output, log)
        if stopping:
            return TrainResult(None, done, None, raw_val, time.perf_counter() - t0, log)
    seconds = time.perf_counter() - t0
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


def row_psnr(log: list[dict]) -> float:
    """The last logged validation PSNR (0 when none was measured yet): NaN means divergence."""
    value = log[-1]["val_psnr"] if log else None
    return 0.0 if value is None else float(value)


def _diverged(step: int, loss: float, config: TrainConfig, ckpt: Path) -> InputError:
    """The error for a run whose loss or weights stopped being finite; the checkpoint on disk
    (if any) is from before and is kept, and no model file is written."""
    kept = f"the last good checkpoint {ckpt} is kept" if ckpt.exists() else "no checkpoint was written"
    return InputError(
        f"training diverged at step {step} (loss {loss:g}; weights or validation not finite): "
        f"lower the learning rate (--lr / lr, now {config.lr:g}) and start again without resuming; "
        f"{kept}, no model file was written"
    )


def _cosine(step: int, config: TrainConfig) -> float:
    t = min(step / max(config.steps - 1, 1), 1.0)
    low = config.lr * config.final_lr_fraction
    return low + 0.5 * (config.lr - low) * (1 + math.cos(math.pi * t))


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


def _save_checkpoint(
    path: Path, network, optimizer, scaler, config: TrainConfig, step: int, log: list, running: list
) -> None:
    payload = {
        "format": "nt2c-checkpoint",
        "step": step,
        "config": json.dumps(asdict(config)),
        "log": json.dumps(log),
        "running": json.dumps(running),
        "architecture": json.dumps(network.config),
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    }
    save_torch(path, payload)


def _load_checkpoint(path: Path, network, optimizer, scaler, config: TrainConfig) -> tuple[int, list, list]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: unreadable checkpoint ({exc}); delete it to start again") from exc
    old = json.loads(payload["config"])
    mismatch = [k for k, v in asdict(config).items() if k != "steps" and old.get(k) != v]
    if mismatch or json.loads(payload["architecture"]) != network.config:
        raise InputError(
            f"{path}: checkpoint was made with other settings ({', '.join(mismatch) or 'architecture'});"
            " use the same settings to resume, or start without --resume"
        )
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    return int(payload["step"]), json.loads(payload["log"]), json.loads(payload["running"])


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
    """A trained network, its loss log and time; ``synthesizer``: the noise it was trained with
    (NMSG), when there is one."""

    network: nn.Module
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    synthesizer: object = None


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
) -> FitResult:
    """The training loop of the networks trained from a ``batch`` function (NMSG, its even/odd
    baseline, the SR3 restorer and its refiner): a network built from ``architecture`` after
    seeding (same seed, same start), or a network given as built; ``batch(step)`` -> tensors that depend only on
    (seed, step);
    ``loss_fn(network, *tensors)`` -> {'loss': total, other terms}, run under autocast on CUDA.
    Adam with cosine decay to 5 %, checkpoints every ``checkpoint_every`` steps, exact resume from
    ``checkpoint``. ``config``: a settings dataclass with steps, lr, amp, seed, log_every and
    checkpoint_every (a checkpoint made with other settings is refused)."""
    dev = torch.device(device)
    torch.manual_seed(config.seed)
    network = (architecture if isinstance(architecture, nn.Module) else build(architecture)).to(dev).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    autocast, scaler = mixed_precision(dev, config.amp)
    start, log, running = 0, [], []
    if checkpoint is not None and checkpoint.exists():
        start, log = _load_fit_checkpoint(checkpoint, network, optimizer, config)
    t0 = time.perf_counter()
    bar = progress_bar(
        range(start, config.steps), total=config.steps, desc=desc, initial=start, unit="step", disable=not progress
    )
    for step in bar:
        t = step / max(config.steps - 1, 1)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
        tensors = [None if a is None else a.to(dev) for a in batch(step)]
        with autocast():
            terms = loss_fn(network, *tensors)
        loss = terms["loss"]
        if not math.isfinite(loss.item()):
            raise InputError(
                f"training diverged at step {step + 1} (loss {loss.item()}); lower --lr"
                + (f" (last good checkpoint kept: {checkpoint})" if checkpoint else "")
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        running.append({k: float(v.item()) for k, v in terms.items()})
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            row = {"step": done, **{k: float(np.mean([r[k] for r in running])) for k in running[0]}}
            log.append(row)
            running = []
            logger.info(f"{desc} step {done}: " + ", ".join(f"{k} {v:.5f}" for k, v in row.items() if k != "step"))
        stopping = stop_after is not None and done >= stop_after
        if checkpoint is not None and (done % config.checkpoint_every == 0 or done == config.steps or stopping):
            if not all_finite(network.state_dict()):
                raise InputError(f"training diverged at step {done}; lower --lr")
            save_torch(
                checkpoint,
                {
                    "format": "nt2c-checkpoint",
                    "step": done,
                    "log": log,
                    "config": asdict(config),
                    "network": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
            )
        if stopping:
            break
    return FitResult(network.eval(), log, time.perf_counter() - t0)


def _load_fit_checkpoint(path: Path, network, optimizer, config) -> tuple[int, list]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: unreadable checkpoint ({exc}); delete it to start again") from exc
    old = payload.get("config", {})
    mismatch = [k for k, v in asdict(config).items() if k != "steps" and old.get(k) != v]
    if mismatch:
        raise InputError(
            f"{path}: checkpoint was made with other settings ({', '.join(mismatch)}); use the same "
            "settings to resume, or delete it"
        )
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    return int(payload["step"]), list(payload["log"])
