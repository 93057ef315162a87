"""``nt2c train``: train the coarse U-Net denoiser on clean/noisy pairs (:func:`nt2c_core.stages.train_coarse`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import InputError
from ..layout import checkpoint
from ..settings import COARSE, TrainConfig
from . import add_settings_argument, register, settings_or_options

log = logging.getLogger(__name__)


def add_training_arguments(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """Flags shared by ``train`` and ``train-fine``."""
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt if it exists")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="crops per step")
    p.add_argument("--crop", type=int, default=d.crop, help="training crop size [px], multiple of 32")
    p.add_argument("--lr", type=float, default=d.lr, help="initial Adam learning rate (cosine decay)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="micrographs held out")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--val-every", type=int, default=d.val_every, help="steps between validations")
    p.add_argument("--width", type=int, default=d.architecture["width"], help="U-Net width (48 = paper, 24 = fast)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    add_settings_argument(p, "the training settings (steps, batch, crop, learning rate, architecture, seed...)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="folder with noisy/ and clean/ MRCs (as 'nt2c simulate' writes)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    p.add_argument(
        "--init",
        help="start from this denoiser's architecture and weights (e.g. the general model; "
        "then a quarter of the from-scratch rate, --lr 2.5e-4, keeps what it learned)",
    )
    add_training_arguments(p, COARSE)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The settings given with ``--settings`` or the flags of :func:`add_training_arguments`."""
    return settings_or_options(args, TrainConfig, _train_options)


def _train_options(args: argparse.Namespace) -> TrainConfig:
    if args.width < 1:
        raise InputError(f"--width = {args.width}: U-Net width must be at least 1")
    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        val_fraction=args.val_fraction,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        width=args.width,
        seed=args.seed,
        consistency=getattr(args, "consistency", 0.0),
        consistency_reference=getattr(args, "consistency_reference", "general"),
    ).validate()


def prepare_output(args: argparse.Namespace) -> Path:
    """The model path; refuses to replace a model unless --resume or --overwrite."""
    output = Path(args.output)
    if output.exists() and not (args.resume or args.overwrite):
        raise InputError(f"{output}: exists; use --resume to continue its training or --overwrite to replace it")
    if args.resume and not checkpoint(output).exists():
        log.info(f"{checkpoint(output)}: no checkpoint; training from the start")
    return output


def report(result) -> int:
    log.info(
        f"wrote {result.model_path} (validation PSNR {result.val_psnr:.2f} dB, raw {result.raw_val_psnr:.2f} dB)"
        if result.val_psnr is not None
        else f"wrote {result.model_path}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..stages import train_coarse

    output = prepare_output(args)
    return report(
        train_coarse(
            args.pairs, output, train_config(args), str(resolve_device(args.device)), init=args.init, resume=args.resume
        )
    )


register("train", "Train the coarse U-Net denoiser on clean/noisy micrograph pairs.", add_arguments, run)
