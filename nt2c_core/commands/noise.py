"""Noise-transfer stages: ``nt2c extract-noise``, ``train-noise-gan``, ``reweight``, ``train-fine``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..denoise import Denoiser
from ..io import read_mrc, write_json, write_mrc
from ..models.store import load_model
from ..noise.extract import ExtractionSettings, extract_noise
from ..noise.reweight import LEVELS, NoiseTransfer, reweight
from ..noise.synthesize import GANConfig, train_noise_gan
from ..pairs import load_pairs
from ..simulate.dataset import resolve_device
from ..training import TrainConfig
from . import register
from .train import add_training_arguments, run_training


def add_extract(p: argparse.ArgumentParser) -> None:
    d = ExtractionSettings()
    p.add_argument("inputs", nargs="+", metavar="RAW.mrc", help="raw micrographs")
    p.add_argument("--coarse", required=True, help="coarse denoiser model (enhances before SSIM)")
    p.add_argument("-o", "--output", required=True, help="folder for noise_patches.mrcs/.star, overlays/")
    p.add_argument("--patch", type=int, default=d.patch, help="tile size d [px]")
    p.add_argument("--step", type=int, default=None, help="tile step [px] (default d/2)")
    p.add_argument("--sub-patches", type=int, default=d.sub_patches, help="N sub-patches per tile (square number)")
    p.add_argument("--threshold", type=float, default=d.threshold, help="minimum pairwise SSIM of a background tile")
    p.add_argument("--smooth", type=float, default=d.smooth, help="Gaussian smoothing of the enhanced image [px] (0 = paper)")
    p.add_argument("--no-flatten", action="store_true", help="keep slow background trends (paper's exact rule)")
    p.add_argument("--min-patches", type=int, default=16, help="fewer patches in all is an error")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def run_extract(args: argparse.Namespace) -> int:
    settings = ExtractionSettings(args.patch, args.step, args.sub_patches, args.threshold, smooth=args.smooth,
                                  flatten=not args.no_flatten)
    denoiser = Denoiser.from_file(args.coarse, resolve_device(args.device))
    report = extract_noise(args.inputs, denoiser.denoise, args.output, settings, args.min_patches)
    print(f"{report.total} noise patches from {len(report.counts)} micrographs -> {report.stack}")
    for name in report.without_background:
        print(f"  {name}: no background tile (skipped)")
    for name, why in report.failed.items():
        print(f"  FAILED {name}: {why}")
    return 0


def add_gan(p: argparse.ArgumentParser) -> None:
    d = GANConfig()
    p.add_argument("--patches", required=True, help="noise_patches.mrcs from 'nt2c extract-noise'")
    p.add_argument("-o", "--output", required=True, help="noise model file to write (.pt)")
    p.add_argument("--iterations", type=int, default=d.iterations, help="generator iterations")
    p.add_argument("--n-critic", type=int, default=d.n_critic, help="critic steps per generator step")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="patches per step")
    p.add_argument("--crop", type=int, default=None, help="training crop [px], multiple of 32 (default: patch size)")
    p.add_argument("--width", type=int, default=d.width, help="network width")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--spectral-weight", type=float, default=d.spectral_weight,
                   help="weight of the power-spectrum term in the generator loss (0 = the paper's loss)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="iterations between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def run_gan(args: argparse.Namespace) -> int:
    patches, _ = read_mrc(args.patches, allow_stack=True)
    config = GANConfig(iterations=args.iterations, n_critic=args.n_critic, batch_size=args.batch_size, crop=args.crop,
                       width=args.width, lr=args.lr, spectral_weight=args.spectral_weight, seed=args.seed,
                       checkpoint_every=args.checkpoint_every)
    out = train_noise_gan(patches, args.output, config, args.resume, str(resolve_device(args.device)),
                          metadata={"source": str(args.patches)})
    print(f"wrote {out} (samples: {out}.samples.png)")
    return 0


def add_reweight(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="simulated pairs folder (noisy/, clean/)")
    p.add_argument("--noise-model", required=True, help="noise model from 'nt2c train-noise-gan'")
    p.add_argument("-o", "--output", required=True, help="folder for the re-weighted pairs (noisy/, clean/)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    add_level_argument(p)


def add_level_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--noise-level", default="real", choices=LEVELS,
                   help="noise weight: the real micrographs' noise level, or the simulation's")


def run_reweight(args: argparse.Namespace) -> int:
    pairs = load_pairs(args.pairs)
    generator, _ = load_model(args.noise_model, kind="noise-gan")
    out, rows = Path(args.output), {}
    for i, (name, x, y) in enumerate(zip(pairs.names, pairs.noisy, pairs.clean)):
        v = generator.sample(1, x.shape, args.seed * 1_000_003 + i)[:, 0]
        noisy, target, coeffs = reweight(torch.from_numpy(y)[None], v, torch.from_numpy(x)[None], args.noise_level)
        write_mrc(out / "noisy" / f"{name}.mrc", noisy[0].numpy(), pairs.pixel_size)
        write_mrc(out / "clean" / f"{name}.mrc", target[0].numpy(), pairs.pixel_size)
        rows[name] = {k: float(v[0]) for k, v in coeffs.items()}
    write_json(out / "coefficients.json", rows)
    betas = np.array([r["beta"] for r in rows.values()])
    print(f"wrote {len(rows)} re-weighted pairs to {out} (noise weight beta {betas.mean():.3f} +- {betas.std():.3f})")
    return 0


def add_fine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="simulated pairs folder (noisy/, clean/)")
    p.add_argument("--coarse", required=True, help="coarse model: the fine model starts from its weights")
    p.add_argument("--noise-model", required=True, help="noise model from 'nt2c train-noise-gan'")
    p.add_argument("-o", "--output", required=True, help="fine model file to write (.pt)")
    add_training_arguments(p, TrainConfig(steps=1000, lr=3e-4))
    add_level_argument(p)


def run_fine(args: argparse.Namespace) -> int:
    generator, _ = load_model(args.noise_model, kind="noise-gan")
    device = str(resolve_device(args.device))
    transfer = NoiseTransfer(generator, args.seed, device, args.noise_level)
    return run_training(args, init=args.coarse, transform=transfer,
                        metadata={"stage": "fine", "noise_model": str(args.noise_model), "noise_level": args.noise_level})


register("extract-noise", "Extract background noise patches from raw micrographs (SSIM rule).", add_extract, run_extract)
register("train-noise-gan", "Train the WGAN-GP noise synthesizer on extracted noise patches.", add_gan, run_gan)
register("reweight", "Write simulated pairs re-weighted with synthesized real noise.", add_reweight, run_reweight)
register("train-fine", "Train the fine denoiser from the coarse one on noise-transferred pairs.", add_fine, run_fine)
