"""One function per NT2C training stage, called by the ``nt2c`` commands, by ``nt2c run``
(:mod:`nt2c_core.pipeline`) and by the Scipion protocols alike, so a stage is assembled in one
place and every route writes the same model with the same metadata.

Each function takes paths, the stage's settings (defaults in :mod:`nt2c_core.settings`) and a
device, and records in the model file what a later step needs: the acquisition the pairs were
simulated with (``PairSet.provenance``, from the pairs folder's ``params.json``), the stage, what
it started from, and for the noise model the pixel size of its patches.

- :func:`train_coarse`: U-Net on simulated pairs (optionally from a model's weights).
- :func:`extract_background`: noise patches from the raw micrographs (mask or SSIM rule).
- :func:`train_noise_model`: WGAN-GP on the noise patches.
- :func:`train_fine`: U-Net from the coarse one, on simulated signal carrying real noise (from
  the GAN, or the patches themselves).
Simulation (:func:`nt2c_core.simulate.simulate_dataset`) and denoising
(:func:`nt2c_core.denoise.denoise_file`) are single functions already.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .errors import InputError
from .logs import staged
from .settings import (
    COARSE,
    EXTRACTION,
    FINE,
    GAN,
    MIN_NOISE_PATCHES,
    NOISE_LEVELS,
    TILES,
    ExtractionSettings,
    GANConfig,
    TileSettings,
    TrainConfig,
)

PathLike = str | os.PathLike


@staged("train-coarse")
def train_coarse(
    pairs: PathLike,
    output: PathLike,
    config: TrainConfig = COARSE,
    device: str = "cpu",
    init: PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
):
    """Train the coarse U-Net on the simulated pairs in ``pairs`` (``noisy/``, ``clean/``) into
    ``output`` (.pt); ``init``: a denoiser whose architecture and weights it starts from (the
    shipped general model in ``nt2c run``); ``resume``: continue ``output``.ckpt. Returns the
    :class:`nt2c_core.training.TrainResult`."""
    from .pairs import load_pairs
    from .training import train_denoiser

    pair_set = load_pairs(pairs)
    return train_denoiser(
        pair_set,
        output,
        config,
        init=init,
        resume=resume,
        device=device,
        progress=progress,
        metadata={**pair_set.provenance, "stage": "coarse"},
    )


def noise_source(path: PathLike):
    """The real-noise source of the fine stage: a noise GAN model file (.pt; its generator), or
    a noise patch stack (.mrcs from :func:`extract_background`; the patches tiled directly,
    :class:`nt2c_core.noise.real_patches.PatchMosaic`)."""
    path = Path(path)
    if path.suffix in (".mrcs", ".mrc"):
        from .io import read_mrc
        from .noise.real_patches import PatchMosaic

        return PatchMosaic(read_mrc(path, allow_stack=True)[0])
    from .models.store import load_model

    return load_model(path, kind="noise-gan")[0]


@staged("train-fine")
def train_fine(
    pairs: PathLike,
    coarse: PathLike,
    noise: PathLike,
    output: PathLike,
    config: TrainConfig = FINE,
    device: str = "cpu",
    noise_level: str = "real",
    resume: bool = False,
    progress: bool = True,
    micrographs: Sequence[PathLike] | None = None,
):
    """Train the fine U-Net from the ``coarse`` model on the simulated pairs, each step's noisy
    input being the simulated signal with fresh real noise from ``noise`` (a GAN model or a
    patch stack, :func:`noise_source`), re-weighted as in eq. 4 at ``noise_level`` ('real' or
    'simulated', :mod:`nt2c_core.noise.reweight`). With real ``micrographs`` and
    ``config.consistency`` > 0, the output is also kept at the particle scale between them and the
    general model's output, or equal to them (``config.consistency_reference``;
    :mod:`nt2c_core.consistency`; the particle radius comes from the pairs' structures); without
    micrographs that term is off (with a warning). Returns the ``TrainResult``."""
    from .noise.reweight import NoiseTransfer
    from .pairs import load_pairs
    from .training import train_denoiser

    if noise_level not in NOISE_LEVELS:
        raise InputError(f"noise level {noise_level!r}: choose one of {', '.join(NOISE_LEVELS)}")
    source = noise_source(noise)
    transfer = NoiseTransfer(source, config.seed, device, noise_level)
    kind = "patches" if source.config.get("name") == "patch-mosaic" else "gan"
    pair_set = load_pairs(pairs)
    term = _consistency_term(pairs, pair_set, config, micrographs, device)
    metadata = {
        **pair_set.provenance,
        "stage": "fine",
        "noise_model": kind,
        "noise_source": str(noise),
        "noise_level": noise_level,
        "consistency": None
        if term is None
        else {
            "weight": term.weight,
            "sigma_px": round(term.sigma, 2),
            "micrographs": len(term.micrographs),
            "reference": config.consistency_reference,
        },
    }
    return train_denoiser(
        pair_set,
        output,
        config,
        init=coarse,
        resume=resume,
        device=device,
        progress=progress,
        metadata=metadata,
        transform=transfer,
        extra_loss=term,
    )


def _consistency_term(
    pairs: PathLike, pair_set, config: TrainConfig, micrographs: Sequence[PathLike] | None, device: str = "cpu"
):
    """The fine stage's :class:`nt2c_core.consistency.RealConsistency`, or None when it is off."""
    import logging

    from .consistency import RealConsistency, particle_radius_px

    if config.consistency <= 0:
        return None
    if not micrographs:
        logging.getLogger(__name__).warning(
            "fine: no real micrographs given, so the data-consistency term is off (consistency "
            f"{config.consistency:g} ignored); give them (--micrographs) to keep the model to the data"
        )
        return None
    radius = particle_radius_px(pair_set.provenance)
    if radius is None:
        raise InputError(
            f"{pairs}: params.json does not say the particle radius (structures[].radius_A), which the "
            "data-consistency term needs; simulate the pairs with 'nt2c simulate' or set consistency 0"
        )
    reference = None
    if config.consistency_reference == "general":
        from .general import general_model_path

        reference = general_model_path()
    return RealConsistency.from_files(
        micrographs,
        pair_set.pixel_size,
        radius,
        config.consistency,
        seed=config.seed,
        reference=reference,
        device=device,
    )


@staged("extract-noise")
def extract_background(
    raw: Sequence[PathLike],
    output: PathLike,
    settings: ExtractionSettings = EXTRACTION,
    enhancer: PathLike | None = None,
    device: str = "cpu",
    tiles: TileSettings = TILES,
    min_patches: int = MIN_NOISE_PATCHES,
    progress: bool = True,
    section: str | None = None,
):
    """Noise patches from the ``raw`` micrographs into the folder ``output``
    (``noise_patches.mrcs``/``.star``, ``overlays/``, ``summary.json``). ``enhancer``: the denoiser
    the rule looks at (default: the shipped general model; the paper's SSIM rule uses the coarse
    model). Fewer than ``min_patches`` in all is an error naming the setting to relax (``section``
    names settings as in an ``nt2c run`` config; None as command-line flags). Returns the
    :class:`nt2c_core.noise.extract.ExtractionReport`."""
    from .denoise import Denoiser
    from .general import general_model_path
    from .noise.extract import extract_noise

    denoiser = Denoiser.from_file(enhancer or general_model_path(), device, tiles)
    return extract_noise(raw, denoiser.denoise, output, settings, min_patches, progress=progress, section=section)


@staged("train-noise")
def train_noise_model(
    patches: PathLike,
    output: PathLike,
    config: GANConfig = GAN,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train the WGAN-GP noise model on a noise patch stack (``noise_patches.mrcs``) into
    ``output``; the model records the stack and its pixel size [Å] (from the stack's header)."""
    from .io import read_mrc
    from .noise.synthesize import train_noise_gan

    stack, pixel_size = read_mrc(patches, allow_stack=True)
    metadata = {"source": str(patches), "pixel_size": float(pixel_size) if pixel_size else None}
    return train_noise_gan(stack, output, config, resume=resume, device=device, progress=progress, metadata=metadata)
