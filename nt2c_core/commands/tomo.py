"""``nt2c simulate-tomo`` (a tomogram with ground truth) and ``nt2c denoise-tomo`` (NMSG)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields

from ..acquisition import Acquisition
from ..settings import DETECTORS, NMSG, TOMO_NOISE_MODELS, TOMO_PAIRINGS, NMSGConfig, TomoSimulationConfig
from . import add_settings_argument, register, settings_or_options

log = logging.getLogger(__name__)

NMSG_HELP = {
    "steps": "training steps",
    "batch_size": "tiles per step",
    "lr": "Adam learning rate (cosine decay)",
    "tile_depth": "training tile depth z [px], multiple of 8",
    "tile_size": "training tile side x, y [px], multiple of 8",
    "width": "3-D U-Net width (channels of the first level; the authors' 48)",
    "first_kernel": "3-D U-Net first kernel [px] (odd; the authors' 7)",
    "residual": "the 3-D U-Net predicts a correction added to its input (the authors'); the default "
    "--no-residual predicts the volume itself, which leaves the identity start reliably",
    "recon": "weight of MSE(f(s), raw)",
    "smooth": "weight of the Sobel term against the over-smoothed reference",
    "guide": "weight of MSE(f(s), Gaussian-filtered raw)",
    "guide_sigma": "sigma of the Gaussian guide [px]",
    "oversmooth_sigma": "sigma [px] of the Gaussian making the over-smoothed "
    "reference when --oversmoothed is not given",
    "noise_model": f"noise synthesizer: {' or '.join(TOMO_NOISE_MODELS)} (3-D mosaics of the volume's noise cubes, "
    "or the authors' 2-D WGAN-GP per slice)",
    "noise_cube": "x-y side of the noise blocks [px]",
    "noise_depth": "z side of the noise blocks [px] (0: the x-y side); deeper blocks keep the noise's correlation "
    "along z",
    "noise_fraction": "share of the quietest blocks taken as noise",
    "noise_cap": "filter the synthetic noise so that at no spatial frequency it has more power than the tomogram "
    "itself (removes the block seams' power in the missing wedge)",
    "gan_iterations": "2-D GAN generator steps (gan2d only)",
    "pairing": "training pairs: r2r (input raw + alpha noise, target raw - noise/alpha: learns the clean volume) "
    "or nmsg (the authors': input raw + noise, target raw)",
    "alpha": "r2r noise scale",
    "infer_draws": "r2r inference: average over this many noise draws (0 = raw alone)",
    "infer_margin": "overlap of inference tiles [px]",
    "flips": "train on tiles flipped at random along z, y and x (the tilt geometry is unchanged by each flip)",
    "infer_flips": "average over flips: noise draw k runs under the k-th of the volume's 8 flips (no extra "
    "time); without draws, the mean over the 8 flips (8x the inference time)",
    "amp": "mixed precision on CUDA",
    "seed": "random seed",
    "log_every": "log losses every N steps",
    "checkpoint_every": "write a resumable checkpoint every N steps",
}


CHOICES = {"noise_model": TOMO_NOISE_MODELS, "pairing": TOMO_PAIRINGS}


def add_nmsg_arguments(p: argparse.ArgumentParser) -> None:
    """One option per :class:`NMSGConfig` field, defaults from ``settings.NMSG``."""
    for f in fields(NMSGConfig):
        default = getattr(NMSG, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=NMSG_HELP[f.name])
        elif f.name in CHOICES:
            p.add_argument(flag, default=default, choices=CHOICES[f.name], help=NMSG_HELP[f.name])
        else:
            p.add_argument(flag, type=type(default), default=default, help=NMSG_HELP[f.name])


def nmsg_config(args: argparse.Namespace) -> NMSGConfig:
    return NMSGConfig(**{f.name: getattr(args, f.name) for f in fields(NMSGConfig)})


def add_denoise_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tomogram", help="the tomogram to denoise (MRC volume, z y x)")
    p.add_argument("-o", "--output", required=True, help="denoised tomogram (MRC; never the input)")
    p.add_argument("--model", help="apply this saved NMSG model instead of training on the tomogram")
    p.add_argument("--save-model", help="where the trained model goes (default OUTPUT_STEM.nmsg.pt next to OUTPUT)")
    p.add_argument(
        "--oversmoothed",
        metavar="MRC",
        help="over-smoothed reconstruction of the same tomogram (e.g. WBP of low-passed tilts, or SIRT) "
        "for the sparsity term; default: the tomogram Gaussian-filtered by --oversmooth-sigma",
    )
    p.add_argument("--work", help="checkpoint folder (default OUTPUT_STEM.nmsg-work next to OUTPUT); a rerun resumes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    add_nmsg_arguments(p)
    add_settings_argument(p, "the NMSG settings (steps, tiles, noise model, pairing, draws, flips, seed...)")


def run_denoise(args: argparse.Namespace) -> int:
    import torch

    from ..device import resolve_device
    from ..tomo.nmsg import denoise_tomogram

    if args.threads:
        torch.set_num_threads(args.threads)
    config = settings_or_options(args, NMSGConfig, lambda a: nmsg_config(a).validate())
    report = denoise_tomogram(
        args.tomogram,
        args.output,
        model=args.model,
        model_out=args.save_model,
        config=config,
        oversmoothed=args.oversmoothed,
        device=str(resolve_device(args.device)),
        work=args.work,
    )
    what = f"trained NMSG ({report.model})" if report.trained else f"applied {report.model}"
    log.info(f"{what}; wrote {report.output} in {report.seconds:.0f} s")
    return 0


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    d = TomoSimulationConfig()
    a = d.acquisition
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output folder (noisy.mrc = the tomogram, clean.mrc, even.mrc, odd.mrc, oversmoothed.mrc, "
        "tilts.mrcs, tilts.tlt, params.json)",
    )
    p.add_argument(
        "--structure",
        action="append",
        required=True,
        metavar="PATH",
        help="PDB/mmCIF file (repeat for several species)",
    )
    p.add_argument("--voltage", type=float, default=a.voltage_kv, help="accelerating voltage [kV]")
    p.add_argument("--pixel-size", type=float, default=a.pixel_size, help="voxel size [Å]")
    p.add_argument("--dose", type=float, default=a.dose, help="total dose of the tilt series [e/Å²]")
    p.add_argument("--b-factor", type=float, default=a.b_factor, help="image B-factor [Å²]")
    p.add_argument("--detector", default=a.detector, choices=sorted(DETECTORS), help="detector model")
    p.add_argument("--defocus", type=float, default=d.defocus_um, help="defocus of every tilt [µm]")
    p.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("X", "Y"), help="volume size [px]")
    p.add_argument("--thickness", type=int, default=d.thickness, help="volume depth z [px]")
    p.add_argument("--ice-thickness", type=float, default=d.ice_thickness, help="ice slab [Å]")
    p.add_argument("--particles", type=int, default=d.particles, help="number of particles")
    p.add_argument(
        "--tilt-range",
        type=float,
        nargs=2,
        default=list(d.tilt_range_deg),
        metavar=("MIN", "MAX"),
        help="tilt range [deg]",
    )
    p.add_argument("--tilt-step", type=float, default=d.tilt_step_deg, help="tilt increment [deg]")
    p.add_argument(
        "--oversmooth-sigma",
        type=float,
        default=d.oversmooth_sigma,
        help="Gaussian sigma [px] on the tilts for the over-smoothed reconstruction",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")


def run_simulate(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..tomo.simulate import simulate_tomogram_files

    acq = Acquisition(
        voltage_kv=args.voltage,
        pixel_size=args.pixel_size,
        dose=args.dose,
        b_factor=args.b_factor,
        detector=args.detector,
    )
    config = TomoSimulationConfig(
        acquisition=acq,
        size=tuple(args.size),
        thickness=args.thickness,
        ice_thickness=args.ice_thickness,
        particles=args.particles,
        tilt_range_deg=tuple(args.tilt_range),
        tilt_step_deg=args.tilt_step,
        defocus_um=args.defocus,
        oversmooth_sigma=args.oversmooth_sigma,
        seed=args.seed,
    )
    paths = simulate_tomogram_files(args.structure, config, args.output, str(resolve_device(args.device)))
    log.info(f"wrote the tomogram {paths['noisy']} with its ground truth and even/odd halves in {args.output}")
    return 0


register(
    "simulate-tomo",
    "Simulate a tomogram (tilt series + WBP) with ground truth and even/odd halves.",
    add_simulate_arguments,
    run_simulate,
)
register(
    "denoise-tomo",
    "NMSG: denoise a tomogram with a network trained on that volume alone (or a saved model).",
    add_denoise_arguments,
    run_denoise,
)
