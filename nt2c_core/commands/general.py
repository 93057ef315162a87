"""``nt2c train-general``: rerun the recipe of the shipped general model (see ``nt2c_core.general``)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from ..settings import GeneralRecipe
from . import register

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = GeneralRecipe()
    p.add_argument("-o", "--work", required=True, help="work folder (pairs.npz, general.pt, checkpoints)")
    p.add_argument("--configs", type=int, default=d.configs, help="random acquisitions simulated")
    p.add_argument("--per-config", type=int, default=d.per_config, help="micrographs per acquisition")
    p.add_argument("--steps", type=int, default=d.train.steps, help="training steps")
    p.add_argument("--width", type=int, default=d.train.architecture["width"], help="U-Net width (larger on a GPU)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed of the recipe")
    p.add_argument("--export", metavar="FILE", help="also write a half-precision copy here (what is shipped)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..device import resolve_device
    from ..general import export_half, train_general_model

    if args.threads:
        torch.set_num_threads(args.threads)
    d = GeneralRecipe()
    recipe = replace(
        d,
        configs=args.configs,
        per_config=args.per_config,
        seed=args.seed,
        train=replace(d.train, steps=args.steps, width=args.width),
    ).validate()
    result = train_general_model(recipe, args.work, device=str(resolve_device(args.device)))
    log.info(
        f"general model: {result.model_path} (validation PSNR {result.val_psnr:.2f} dB, raw "
        f"{result.raw_val_psnr:.2f} dB)"
    )
    if args.export:
        log.info(f"half-precision copy: {export_half(result.model_path, args.export)}")
    return 0


register("train-general", "Train the general denoiser (the shipped model's recipe).", add_arguments, run)
