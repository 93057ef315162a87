"""``nt2c train``: train a U-Net denoiser on clean/noisy pairs (coarse model, or fine with --init)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..pairs import load_pairs
from ..simulate.dataset import resolve_device
from ..training import TrainConfig, checkpoint_path, train_denoiser
from . import register


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
    p.add_argument("--width", type=int, default=d.width, help="U-Net width (48 = paper, 24 = fast)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="folder with noisy/ and clean/ MRCs (as 'nt2c simulate' writes)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    p.add_argument("--init", help="start from this model's architecture and weights (fine from coarse)")
    add_training_arguments(p, TrainConfig())


def run_training(args: argparse.Namespace, init: str | None = None, transform=None, metadata: dict | None = None) -> int:
    output = Path(args.output)
    if output.exists() and not (args.resume or args.overwrite):
        raise InputError(f"{output}: exists; use --resume to continue its training or --overwrite to replace it")
    pairs = load_pairs(args.pairs)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, crop=args.crop, lr=args.lr,
                         val_fraction=args.val_fraction, checkpoint_every=args.checkpoint_every,
                         val_every=args.val_every, width=args.width, seed=args.seed)
    if args.resume and not checkpoint_path(output).exists():
        print(f"{checkpoint_path(output)}: no checkpoint; training from the start")
    result = train_denoiser(pairs, output, config, init=init, resume=args.resume, transform=transform,
                            device=str(resolve_device(args.device)),
                            metadata={**acquisition_of(Path(args.pairs)), **(metadata or {})})
    print(f"wrote {result.model_path} (validation PSNR {result.val_psnr:.2f} dB, raw {result.raw_val_psnr:.2f} dB)"
          if result.val_psnr is not None else f"wrote {result.model_path}")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_training(args, init=args.init, metadata={"stage": "fine" if args.init else "coarse"})


def acquisition_of(folder: Path) -> dict:
    """The acquisition recorded by 'nt2c simulate' in the pairs folder, if any."""
    params = folder / "params.json"
    if not params.is_file():
        return {}
    config = json.loads(params.read_text()).get("config", {})
    return {"acquisition": config.get("acquisition"), "simulation": {k: v for k, v in config.items() if k != "acquisition"}}


register("train", "Train a U-Net denoiser on clean/noisy micrograph pairs.", add_arguments, run)
