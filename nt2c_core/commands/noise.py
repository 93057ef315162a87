"""Noise-transfer stages: ``nt2c extract-noise``, ``train-noise-gan``, ``reweight``, ``train-fine``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import InputError
from ..settings import (
    CONSISTENCY_REFERENCES,
    EXTRACTION,
    FINE,
    GAN,
    MIN_NOISE_PATCHES,
    NOISE_LEVELS,
    RULES,
    ExtractionSettings,
    GANConfig,
)
from . import add_settings_argument, register, settings_or_options
from .train import add_training_arguments, prepare_output, report, train_config

log = logging.getLogger(__name__)


def add_extract(p: argparse.ArgumentParser) -> None:
    d = EXTRACTION
    p.add_argument("inputs", nargs="+", metavar="RAW.mrc", help="raw micrographs")
    p.add_argument("-o", "--output", required=True, help="folder for noise_patches.mrcs/.star, overlays/, summary.json")
    p.add_argument(
        "--rule",
        default=d.rule,
        choices=RULES,
        help="mask: particle mask on the denoised image, patches from the free area (any particle "
        "density); ssim: the paper's tile rule (needs empty d x d tiles)",
    )
    p.add_argument(
        "--coarse",
        default=None,
        help="denoiser that enhances the micrographs before the rule (default: the shipped general "
        "model; the paper uses the coarse model with the SSIM rule)",
    )
    p.add_argument("--particle-diameter", type=float, default=None, help="particle diameter [Å] (mask rule)")
    p.add_argument(
        "--structure",
        default=None,
        help="PDB/mmCIF file: the particle diameter comes from it (instead of --particle-diameter)",
    )
    p.add_argument(
        "--patch",
        type=int,
        default=None,
        help="patch size [px] (default: mask rule, chosen from the free area; SSIM rule, two particle "
        "diameters or 320)",
    )
    p.add_argument("--dilation", type=float, default=d.dilation, help="mask rule: mask growth [particle radii]")
    p.add_argument(
        "--target-patches",
        type=int,
        default=d.target_patches,
        help="mask rule: the automatic patch size aims at this many patches",
    )
    p.add_argument("--step", type=int, default=None, help="SSIM rule: tile step [px] (default d/2)")
    p.add_argument("--sub-patches", type=int, default=d.sub_patches, help="SSIM rule: N sub-patches per tile (square)")
    p.add_argument("--threshold", type=float, default=d.threshold, help="SSIM rule: minimum pairwise SSIM")
    p.add_argument(
        "--smooth", type=float, default=d.smooth, help="SSIM rule: smoothing of the enhanced image [px] (0 = paper)"
    )
    p.add_argument(
        "--no-flatten", action="store_true", help="SSIM rule: keep slow background trends (paper's exact rule)"
    )
    p.add_argument("--min-patches", type=int, default=MIN_NOISE_PATCHES, help="fewer patches in all is an error")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    add_settings_argument(p, "the extraction settings (rule, patch size, particle diameter, SSIM threshold...)")


def particle_diameter(structure: str | None, diameter: float | None) -> float | None:
    """The particle diameter [Å]: given, or twice the radius of an atomic model."""
    if structure is None:
        return diameter
    from ..simulate.structure import load_structure

    return round(2 * load_structure(structure).radius, 1)


def run_extract(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..stages import extract_background

    settings = settings_or_options(
        args,
        ExtractionSettings,
        lambda a: ExtractionSettings(
            patch=a.patch,
            step=a.step,
            sub_patches=a.sub_patches,
            threshold=a.threshold,
            smooth=a.smooth,
            flatten=not a.no_flatten,
            rule=a.rule,
            particle_diameter=particle_diameter(a.structure, a.particle_diameter),
            dilation=a.dilation,
            target_patches=a.target_patches,
        ).validate(),
    )
    report = extract_background(
        args.inputs, args.output, settings, args.coarse, str(resolve_device(args.device)), min_patches=args.min_patches
    )
    log.info(
        f"{report.total} noise patches of {report.patch} px from {len(report.counts)} micrographs -> {report.stack}"
    )
    for name, n in report.counts.items():
        free = report.free_fraction.get(name)
        log.info(f"  {name}: {n} patches" + (f", free area {100 * free:.1f} %" if free is not None else ""))
    if report.band_power_ratio is not None:
        log.info(
            f"particle-band power of the patches vs whole micrographs: {report.band_power_ratio:.2f} "
            "(1 = as much particle signal as the micrographs; lower is cleaner)"
        )
    for name, why in report.failed.items():
        log.warning(f"  FAILED {name}: {why}")
    return 0


def add_gan(p: argparse.ArgumentParser) -> None:
    d = GAN
    p.add_argument("--patches", required=True, help="noise_patches.mrcs from 'nt2c extract-noise'")
    p.add_argument("-o", "--output", required=True, help="noise model file to write (.pt)")
    p.add_argument("--iterations", type=int, default=d.iterations, help="generator iterations")
    p.add_argument("--n-critic", type=int, default=d.n_critic, help="critic steps per generator step")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="patches per step")
    p.add_argument("--crop", type=int, default=None, help="training crop [px], multiple of 32 (default: patch size)")
    p.add_argument("--width", type=int, default=d.width, help="network width")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument(
        "--spectral-weight",
        type=float,
        default=d.spectral_weight,
        help="weight of the power-spectrum term in the generator loss (0 = the paper's loss)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="iterations between checkpoints")
    p.add_argument("--log-every", type=int, default=d.log_every, help="iterations between loss log lines")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    add_settings_argument(p, "the GAN's settings (iterations, batch, crop, width, learning rate, seed...)")


def gan_config(args: argparse.Namespace) -> GANConfig:
    """The settings given with ``--settings`` or the flags of :func:`add_gan`."""
    return settings_or_options(
        args,
        GANConfig,
        lambda args: GANConfig(
            iterations=args.iterations,
            n_critic=args.n_critic,
            batch_size=args.batch_size,
            crop=args.crop,
            width=args.width,
            lr=args.lr,
            spectral_weight=args.spectral_weight,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
        ).validate(),
    )


def run_gan(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..stages import train_noise_model

    out = train_noise_model(
        args.patches, args.output, gan_config(args), str(resolve_device(args.device)), resume=args.resume
    )
    log.info(f"wrote {out} (samples: {out}.samples.png)")
    return 0


def add_reweight(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="simulated pairs folder (noisy/, clean/)")
    p.add_argument("--noise-model", required=True, help="noise model from 'nt2c train-noise-gan'")
    p.add_argument("-o", "--output", required=True, help="folder for the re-weighted pairs (noisy/, clean/)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    add_level_argument(p)


def add_level_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--noise-level",
        default="real",
        choices=NOISE_LEVELS,
        help="noise weight: the real micrographs' noise level, or the simulation's",
    )


def run_reweight(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..io import write_json, write_mrc
    from ..models.store import load_model
    from ..noise.reweight import reweight
    from ..pairs import load_pairs

    pairs = load_pairs(args.pairs)
    generator, _ = load_model(args.noise_model, kind="noise-gan")
    out, rows = Path(args.output), {}
    for i, (name, x, y) in enumerate(zip(pairs.names, pairs.noisy, pairs.clean)):
        v = generator.sample(1, x.shape, args.seed * 1_000_003 + i)[:, 0]
        noisy, target, coeffs = reweight(torch.from_numpy(y)[None], v, torch.from_numpy(x)[None], args.noise_level)
        if not (torch.isfinite(noisy).all() and torch.isfinite(target).all()):
            raise InputError(f"{name}: the re-weighted pair is not finite (NaN/Inf); nothing more was written")
        write_mrc(out / "noisy" / f"{name}.mrc", noisy[0].numpy(), pairs.pixel_size)
        write_mrc(out / "clean" / f"{name}.mrc", target[0].numpy(), pairs.pixel_size)
        rows[name] = {k: float(v[0]) for k, v in coeffs.items()}
    write_json(out / "coefficients.json", rows)
    betas = np.array([r["beta"] for r in rows.values()])
    log.info(
        f"wrote {len(rows)} re-weighted pairs to {out} (noise weight beta {betas.mean():.3f} +- {betas.std():.3f})"
    )
    return 0


def add_fine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="simulated pairs folder (noisy/, clean/)")
    p.add_argument("--coarse", required=True, help="coarse model: the fine model starts from its weights")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--noise-model", help="noise model from 'nt2c train-noise-gan'")
    source.add_argument(
        "--noise-patches",
        metavar="STACK",
        help="noise_patches.mrcs from 'nt2c extract-noise': tile the real patches directly (no GAN)",
    )
    p.add_argument("-o", "--output", required=True, help="fine model file to write (.pt)")
    p.add_argument(
        "--micrographs",
        nargs="+",
        metavar="MRC",
        help="the real micrographs (those the noise came from): the data-consistency term keeps the "
        "fine model's output at the particle scale between them and the general model's output "
        "(without them the term is off)",
    )
    p.add_argument(
        "--consistency",
        type=float,
        default=FINE.consistency,
        help="weight of the data-consistency term (0 = off, the paper's fine stage)",
    )
    p.add_argument(
        "--consistency-reference",
        choices=CONSISTENCY_REFERENCES,
        default=FINE.consistency_reference,
        help="the band's other side: general = the shipped general model's output (the fine model may "
        "remove as much particle-scale noise as it does); none = equal to the raw micrographs",
    )
    add_training_arguments(p, FINE)
    add_level_argument(p)


def run_fine(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..stages import train_fine

    if args.noise_patches and Path(args.noise_patches).suffix not in (".mrcs", ".mrc"):
        raise InputError(f"{args.noise_patches}: --noise-patches takes the .mrcs stack of 'nt2c extract-noise'")
    output = prepare_output(args)
    return report(
        train_fine(
            args.pairs,
            args.coarse,
            args.noise_model or args.noise_patches,
            output,
            train_config(args),
            str(resolve_device(args.device)),
            args.noise_level,
            resume=args.resume,
            micrographs=args.micrographs,
        )
    )


register(
    "extract-noise",
    "Extract background noise patches from raw micrographs (particle-mask or SSIM rule).",
    add_extract,
    run_extract,
)
register("train-noise-gan", "Train the WGAN-GP noise synthesizer on extracted noise patches.", add_gan, run_gan)
register("reweight", "Write simulated pairs re-weighted with synthesized real noise.", add_reweight, run_reweight)
register("train-fine", "Train the fine denoiser from the coarse one on noise-transferred pairs.", add_fine, run_fine)
