"""``nt2c simulate-particles``, ``nt2c train-restorer``, ``nt2c restore-particles`` (SR3) and
``nt2c reconstruct`` (a map from particles with known orientations and CTFs, FSC against a map)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields

from ..acquisition import Acquisition
from ..settings import (
    DETECTORS,
    PARTICLE_CONTRAST,
    PARTICLE_NOISE,
    RESTORER,
    RESTORER_METHODS,
    ParticleSimulationConfig,
    RestorerConfig,
)
from . import add_settings_argument, register, settings_or_options

log = logging.getLogger(__name__)

RESTORER_HELP = {
    "method": "sr3: the diffusion restorer (+ post-processing); unet: the NT2C U-Net trained on the same pairs "
    "(MSE, one pass; the baseline a generative restorer must beat)",
    "steps": "diffusion U-Net training steps (U-Net: its training steps)",
    "batch_size": "particles per training step",
    "lr": "Adam learning rate of the diffusion U-Net (cosine decay)",
    "width": "diffusion U-Net channels at full resolution (U-Net: its width)",
    "levels": "resolution levels of both U-Nets",
    "sample_steps": "DDIM steps per restoration",
    "samples": "restored draws averaged per particle",
    "refine_steps": "post-processing U-Net training steps (0 = no post-processing)",
    "refine_width": "post-processing U-Net channels",
    "refine_pool": "training particles restored to train the post-processing on",
    "empty_fraction": "fraction of training boxes holding only noise (target: an empty box), so the restorer "
    "learns that empty boxes exist instead of painting its mean particle into noise",
    "batch": "particles per restoration batch",
    "amp": "mixed precision on CUDA",
    "invention_images": "images of noise matched to the data restored by the invention check (0 = no check)",
    "invention_threshold": "excess correlation with the training structure over blurred noise that flags "
    "the restorer as inventing",
    "seed": "random seed",
    "log_every": "log losses every N steps",
    "checkpoint_every": "checkpoint every N steps",
}
INFERENCE = (
    "sample_steps",
    "samples",
    "batch",
    "seed",
    "invention_images",
    "invention_threshold",
)  # the settings restore-particles may override


def add_restorer_arguments(
    p: argparse.ArgumentParser, only: tuple[str, ...] | None = None, defaults: bool = True
) -> None:
    """One option per :class:`RestorerConfig` field (or those in ``only``)."""
    for f in fields(RestorerConfig):
        if only is not None and f.name not in only:
            continue
        default = getattr(RESTORER, f.name) if defaults else None
        flag = "--" + f.name.replace("_", "-")
        help_text = RESTORER_HELP[f.name] + ("" if defaults else " (default: the model's)")
        if isinstance(getattr(RESTORER, f.name), bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif f.name == "method":
            p.add_argument(flag, choices=RESTORER_METHODS, default=default, help=help_text)
        else:
            p.add_argument(flag, type=type(getattr(RESTORER, f.name)), default=default, help=help_text)


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    d = ParticleSimulationConfig()
    a = d.acquisition
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output folder (particles.mrcs noisy, clean.mrcs truth, particles.star, map_N.mrc, params.json)",
    )
    p.add_argument(
        "--structure",
        action="append",
        required=True,
        metavar="PATH",
        help="PDB/mmCIF file (repeat for several species, drawn uniformly)",
    )
    p.add_argument("--count", type=int, default=d.count, help="number of particles")
    p.add_argument("--box", type=int, default=d.box, help="particle box [px] (even)")
    p.add_argument("--pixel-size", type=float, default=a.pixel_size, help="pixel size [Å]")
    p.add_argument("--voltage", type=float, default=a.voltage_kv, help="accelerating voltage [kV]")
    p.add_argument("--cs", type=float, default=a.cs_mm, help="spherical aberration [mm]")
    p.add_argument("--amplitude-contrast", type=float, default=a.amplitude_contrast, help="amplitude contrast (0-1)")
    p.add_argument("--dose", type=float, default=a.dose, help="dose [e/Å²]")
    p.add_argument("--b-factor", type=float, default=a.b_factor, help="image B-factor [Å²]")
    p.add_argument("--detector", default=a.detector, choices=sorted(DETECTORS), help="detector model")
    p.add_argument(
        "--defocus-range",
        type=float,
        nargs=2,
        default=list(d.defocus_range_um),
        metavar=("MIN", "MAX"),
        help="defocus drawn uniformly in this range [µm]",
    )
    p.add_argument("--astigmatism", type=float, default=d.astigmatism_um, help="largest |U - V| / 2 [µm]")
    p.add_argument("--ice-thickness", type=float, default=d.ice_thickness, help="amorphous ice [Å] (0 = none)")
    p.add_argument("--max-shift", type=float, default=d.max_shift, help="largest particle offset from the centre [px]")
    p.add_argument(
        "--noise",
        default=d.noise,
        choices=PARTICLE_NOISE,
        help="simulated shot noise, or the data set's real noise patches (--noise-patches)",
    )
    p.add_argument(
        "--contrast",
        default=d.contrast,
        choices=PARTICLE_CONTRAST,
        help="contrast of the written stacks: white (protein bright, RELION's convention) or dark "
        "(physical, as in raw micrographs)",
    )
    p.add_argument(
        "--noise-patches", metavar="MRCS", help="real background patches (nt2c extract-noise) for --noise patches"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add_settings_argument(p, "the particle simulation's settings (acquisition, box, count, defocus, noise, seed)")


def particle_simulation(args: argparse.Namespace) -> ParticleSimulationConfig:
    """The particle simulation set by the options."""
    acq = Acquisition(
        voltage_kv=args.voltage,
        cs_mm=args.cs,
        amplitude_contrast=args.amplitude_contrast,
        pixel_size=args.pixel_size,
        dose=args.dose,
        b_factor=args.b_factor,
        detector=args.detector,
    )
    return ParticleSimulationConfig(
        acquisition=acq,
        box=args.box,
        count=args.count,
        defocus_range_um=tuple(args.defocus_range),
        astigmatism_um=args.astigmatism,
        ice_thickness=args.ice_thickness,
        max_shift=args.max_shift,
        noise=args.noise,
        contrast=args.contrast,
        seed=args.seed,
    )


def run_simulate(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..particles.simulate import simulate_particle_files

    config = settings_or_options(args, ParticleSimulationConfig, particle_simulation)
    paths = simulate_particle_files(
        args.structure, config, args.output, args.noise_patches, str(resolve_device(args.device))
    )
    log.info(f"wrote {config.count} particles ({paths['particles']}), their ground truth and {paths['star']}")
    return 0


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pairs", help="simulated particle folder (nt2c simulate-particles: particles.mrcs + clean.mrcs)")
    p.add_argument("-o", "--output", required=True, help="the restorer model file (.pt)")
    p.add_argument("--work", help="checkpoint folder (default OUTPUT_STEM.sr3-work); a rerun resumes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    add_restorer_arguments(p)
    add_settings_argument(p, "the restorer's settings (every option above but --work, --device, --threads)")


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ..device import resolve_device
    from ..particles.sr3 import train_restorer_files

    if args.threads:
        torch.set_num_threads(args.threads)
    config = settings_or_options(
        args,
        RestorerConfig,
        lambda a: RestorerConfig(**{f.name: getattr(a, f.name) for f in fields(RestorerConfig)}).validate(),
    )
    path = train_restorer_files(args.pairs, args.output, config, args.work, str(resolve_device(args.device)))
    log.info(f"wrote the restorer {path}")
    return 0


def add_restore_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="particle stacks (MRC) or one RELION particle STAR file")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output folder: STEM_restored.mrcs per stack, or NAME.star + Particles/ for a STAR file",
    )
    p.add_argument("--model", required=True, help="a restorer (nt2c train-restorer)")
    p.add_argument("--no-post", dest="post", action="store_false", help="skip the post-processing U-Net")
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write STEM_variance.mrcs per stack: each pixel's variance over the draws (needs --samples >= 2)",
    )
    p.add_argument(
        "--check-only",
        action="store_true",
        help="run only the invention check (OUTPUT/invention.json): does the restorer paint its training "
        "structure into noise matched to these particles?",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    add_restorer_arguments(p, INFERENCE, defaults=False)


def run_restore(args: argparse.Namespace) -> int:
    import torch

    from ..device import resolve_device
    from ..particles.sr3 import restore_particles

    if args.threads:
        torch.set_num_threads(args.threads)
    report = restore_particles(
        args.inputs,
        args.output,
        args.model,
        {k: getattr(args, k) for k in INFERENCE},
        args.post,
        str(resolve_device(args.device)),
        uncertainty=args.uncertainty,
        check_only=args.check_only,
    )
    if args.check_only:
        log.info(f"invention check: {report.invention.message()} ({args.output}/invention.json)")
        return 0
    where = report.star or ", ".join(str(p) for p in report.outputs)
    log.info(f"restored {report.particles} particles in {report.seconds:.0f} s: {where}")
    if report.invention is not None and report.invention.flagged:
        log.warning(
            f"the restorer FAILED the invention check ({args.output}/invention.json): {report.invention.label()}"
        )
    return 0


def add_reconstruct_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("star", help="RELION particle STAR file with orientations and CTF")
    p.add_argument("-o", "--output", required=True, help="the reconstructed map (MRC)")
    p.add_argument(
        "--reference",
        help="a map of the same box to compute the FSC against (printed, and written as OUTPUT_STEM.fsc.csv)",
    )
    p.add_argument("--no-ctf", dest="ctf", action="store_false", help="do not weight by the CTF")
    p.add_argument(
        "--contrast",
        default="white",
        choices=PARTICLE_CONTRAST,
        help="contrast of the particle images: white (protein bright, RELION's convention, as "
        "relion_reconstruct without --invert_contrast) or dark (physical)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")


def run_reconstruct(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..particles.maps import reconstruct_star

    report = reconstruct_star(
        args.star, args.output, args.reference, args.ctf, str(resolve_device(args.device)), contrast=args.contrast
    )
    if report.curve is not None:
        log.info(
            f"FSC against {args.reference}: 0.143 at {report.curve.resolution(0.143):.2f} Å, 0.5 at "
            f"{report.curve.resolution(0.5):.2f} Å ({report.csv})"
        )
    log.info(f"wrote {report.output} from {report.particles} particles")
    return 0


register(
    "simulate-particles",
    "Simulate particle images with ground truth, orientations, CTFs and true maps.",
    add_simulate_arguments,
    run_simulate,
)
register(
    "train-restorer",
    "Train a particle restorer on simulated particles: SR3 diffusion (+ post-processing U-Net) or a U-Net.",
    add_train_arguments,
    run_train,
)
register(
    "restore-particles",
    "Restore particle images (MRC stacks or a RELION STAR file) with a restorer (SR3 or U-Net).",
    add_restore_arguments,
    run_restore,
)
register(
    "reconstruct",
    "Reconstruct a map from particles with known orientations and CTFs; FSC against a map.",
    add_reconstruct_arguments,
    run_reconstruct,
)
