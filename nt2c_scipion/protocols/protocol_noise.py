"""Noise stages as protocols: extract pure-noise background patches from the raw micrographs,
and train the WGAN-GP noise model on them (``nt2c_core.stages.extract_background`` and
``train_noise_model``, as ``nt2c extract-noise``/``train-noise-gan`` and ``nt2c run``; form
defaults from ``nt2c_core.settings``)."""

import json
import os
from enum import Enum

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import Coordinate, Particle, SetOfParticles

from nt2c_core.layout import MODEL, NOISE_STACK, NOISE_STAR, NOISE_SUMMARY
from nt2c_core.settings import EXTRACTION, GAN, MIN_NOISE_PATCHES, RULES, SIZE_MULTIPLE

from ..constants import OUTPUT_MODEL
from ..objects import NT2CModel
from .protocol_base import ProtNT2CBase

OUTPUT_PATCHES = "outputNoisePatches"
RULE_CHOICES = ("particle mask", "SSIM tiles (paper)")


class ExtractNoiseOutputs(Enum):
    outputNoisePatches = SetOfParticles


class ProtNT2CExtractNoise(ProtNT2CBase):
    """Find pure-noise background patches and cut them from the raw micrographs: by default with a
    particle mask on the denoised image (patches from the free area between particles; works on
    dense fields), or with the paper's SSIM tile rule. Output: the patches as particles, each with
    its coordinate (patch centre) on its raw micrograph; the summary gives patches and free area
    per micrograph."""

    _label = "extract noise patches"
    _possibleOutputs = ExtractNoiseOutputs

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "inputMicrographs",
            params.PointerParam,
            pointerClass="SetOfMicrographs",
            important=True,
            label="Raw micrographs",
            help="The patches are cut from these (not from the denoised images).",
        )
        form.addParam(
            "inputModel",
            params.PointerParam,
            pointerClass="NT2CModel",
            important=True,
            label="Denoising model",
            help="Denoises the micrographs so that background can be told apart: the coarse model "
            "(the paper, with the SSIM rule) or any denoiser, e.g. an imported general model.",
        )
        form.addSection("Extraction")
        form.addParam(
            "rule",
            params.EnumParam,
            choices=RULE_CHOICES,
            default=0,
            label="Rule",
            help="Particle mask: the particles are found on the denoised image (local contrast at the "
            "particle scale), and patches are cut from the area between them; works at any particle "
            "density. SSIM tiles: the paper's rule, d x d tiles whose 4 quadrants look alike; needs "
            "empty tiles, which dense fields do not have.",
        )
        form.addParam(
            "particleDiameter",
            params.FloatParam,
            default=0,
            label="Particle diameter (Å)",
            condition="rule == 0",
            help=f"Largest particle diameter; the particle mask is grown by {EXTRACTION.dilation} radius "
            "around each particle. Required by the particle-mask rule.",
        )
        form.addParam(
            "patch",
            params.IntParam,
            default=0,
            label="Patch size d (px)",
            help=f"0 = automatic: with the particle mask, the largest multiple of {SIZE_MULTIPLE} px that "
            f"gives about {EXTRACTION.target_patches} patches; with SSIM tiles, two particle diameters "
            "or 320 px (the paper's). Tiles of the SSIM rule are scanned with step d/2.",
        )
        form.addParam(
            "threshold",
            params.FloatParam,
            default=EXTRACTION.threshold,
            label="SSIM threshold",
            condition="rule == 1",
            help="A tile is background when all pairwise SSIMs of its 4 sub-patches exceed this.",
        )
        form.addParam(
            "smooth",
            params.FloatParam,
            default=EXTRACTION.smooth,
            expertLevel=params.LEVEL_ADVANCED,
            condition="rule == 1",
            label="Smoothing (px)",
            help="Gaussian smoothing of the denoised image (0 = paper).",
        )
        form.addParam(
            "flatten",
            params.BooleanParam,
            default=EXTRACTION.flatten,
            expertLevel=params.LEVEL_ADVANCED,
            condition="rule == 1",
            label="Flatten background",
            help="Remove slow trends before the SSIM rule (No = paper).",
        )
        form.addParam(
            "minPatches",
            params.IntParam,
            default=MIN_NOISE_PATCHES,
            label="Minimum patches",
            help="Fewer patches in all stops the run with advice on what to relax.",
        )
        self._defineGpuParams(form)
        self._defineThreadParams(form)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.extractStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def extractSettings(self):
        """The extraction defaults (``nt2c_core.settings.EXTRACTION``) with the form's values."""
        from nt2c_core.settings import replace

        diameter = self.particleDiameter.get()
        return replace(
            EXTRACTION,
            patch=self.patch.get() or None,
            threshold=self.threshold.get(),
            smooth=self.smooth.get(),
            flatten=self.flatten.get(),
            rule=RULES[self.rule.get()],
            particle_diameter=diameter if diameter and diameter > 0 else None,
        )

    def extractStep(self):
        files = [m.getFileName() for m in self.inputMicrographs.get()]
        if not self._inProcess():  # the dedicated environment's 'nt2c extract-noise'
            self._runStage(
                "extract-noise",
                self.extractSettings(),
                *[os.path.abspath(f) for f in files],
                "-o",
                os.path.abspath(self._getExtraPath("noise")),
                "--coarse",
                os.path.abspath(self.inputModel.get().getFileName()),
                "--min-patches",
                self.minPatches.get(),
            )
            return
        from nt2c_core.stages import extract_background

        extract_background(
            files,
            self._getExtraPath("noise"),
            self.extractSettings(),
            self.inputModel.get().getFileName(),
            self._device(),
            min_patches=self.minPatches.get(),
            progress=True,
        )

    def createOutputStep(self):
        from emtable import Table  # Scipion's STAR reader (pwem's), also where nt2c_core is not importable

        mics = {os.path.basename(m.getFileName()): m.clone() for m in self.inputMicrographs.get()}
        star = Table(fileName=self._getExtraPath("noise", NOISE_STAR))
        stack = self._getExtraPath("noise", NOISE_STACK)
        out = self._createSetOfParticles()
        out.copyInfo(self.inputMicrographs.get())
        for index, row in enumerate(star, start=1):
            coord = Coordinate()
            coord.setMicrograph(mics[str(row.rlnMicrographName)])
            coord.setPosition(int(round(float(row.rlnCoordinateX))), int(round(float(row.rlnCoordinateY))))
            particle = Particle(location=(index, stack))
            particle.setCoordinate(coord)
            out.append(particle)
        self._defineOutputs(**{OUTPUT_PATCHES: out})
        self._defineSourceRelation(self.inputMicrographs, out)

    def _perMicrograph(self) -> dict:
        path = self._getExtraPath("noise", NOISE_SUMMARY)
        return json.load(open(path))["per_micrograph"] if os.path.exists(path) else {}

    def _summary(self):
        counts = self._perMicrograph()
        if not counts:
            return ["No patches extracted yet."]
        summary = json.load(open(self._getExtraPath("noise", NOISE_SUMMARY)))
        free = summary.get("free_fraction", {})
        lines = [
            f"{sum(counts.values())} noise patches of {summary.get('patch')} px from {len(counts)} micrographs "
            f"({RULE_CHOICES[self.rule.get()]})."
        ]
        if summary.get("band_power_ratio") is not None:
            lines.append(
                f"Particle-band power of the patches vs whole micrographs: {summary['band_power_ratio']:.2f} "
                "(lower is cleaner)."
            )
        lines += [
            f"{name}: {n}" + (f", free area {100 * free[name]:.1f} %" if name in free else "")
            for name, n in sorted(counts.items())
        ]
        return lines

    def _validate(self):
        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        patch = self.patch.get()
        if patch and (patch % 2 or patch < 8 or (self.rule.get() == 0 and patch % 32)):
            errors.append(
                "Patch size: 0 (automatic), a multiple of 32 px (particle mask) or an even number of at "
                "least 8 px (SSIM tiles)."
            )
        if self.rule.get() == 0 and not self.particleDiameter.get() > 0:
            errors.append("Particle diameter: the particle-mask rule needs it (Å).")
        if not -1 < self.threshold.get() < 1:
            errors.append("SSIM threshold: must lie in (-1, 1).")
        return errors

    def _citations(self):
        return ["Li2022NT2C"]


class TrainGANOutputs(Enum):
    outputModel = NT2CModel


def patch_stack(patches, path: str) -> str:
    """Noise patches (a SetOfParticles: any subset of any stacks) written once as one stack at
    ``path`` with their sampling; returns ``path``."""
    from nt2c_core.io import read_mrc, write_mrc

    if not os.path.exists(path):
        stacks, out = {}, []
        for particle in patches:
            index, source = particle.getLocation()
            if source not in stacks:
                stacks[source] = read_mrc(source, allow_stack=True)[0]
            out.append(stacks[source][index - 1])
        write_mrc(path, np.stack(out), patches.getSamplingRate())
    return path


class ProtNT2CTrainNoiseGAN(ProtNT2CBase):
    """Train the WGAN-GP noise synthesizer on extracted noise patches; outputs the noise model
    (an NT2CModel of kind 'noise-gan') used by 'train fine denoiser'."""

    _label = "train noise GAN"
    _possibleOutputs = TrainGANOutputs

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "inputPatches",
            params.PointerParam,
            pointerClass="SetOfParticles",
            important=True,
            label="Noise patches",
            help="From 'extract noise patches'.",
        )
        form.addSection("Training")
        form.addParam(
            "iterations",
            params.IntParam,
            default=GAN.iterations,
            label="Generator iterations",
            help=f"Generator steps ({GAN.n_critic} critic steps each).",
        )
        form.addParam(
            "crop",
            params.IntParam,
            default=0,
            label="Crop (px)",
            help=f"Training crop, a multiple of {SIZE_MULTIPLE} (0 = the largest that fits the patches).",
        )
        form.addParam(
            "batchSize", params.IntParam, default=GAN.batch_size, label="Batch size", help="Patches per step."
        )
        form.addParam(
            "width",
            params.IntParam,
            default=GAN.width,
            expertLevel=params.LEVEL_ADVANCED,
            label="Network width",
            help="Channels of the generator and critic.",
        )
        form.addParam(
            "spectralWeight",
            params.FloatParam,
            default=GAN.spectral_weight,
            expertLevel=params.LEVEL_ADVANCED,
            label="Spectral term weight",
            help="Power-spectrum term of the generator loss (0 = paper).",
        )
        form.addParam(
            "seed",
            params.IntParam,
            default=GAN.seed,
            expertLevel=params.LEVEL_ADVANCED,
            label="Random seed",
            help="The same seed and patches give the same model.",
        )
        self._defineGpuParams(form)
        self._defineThreadParams(form)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _patchStack(self) -> str:
        return patch_stack(self.inputPatches.get(), self._getExtraPath(NOISE_STACK))

    def _ganConfig(self):
        """The GAN defaults (``nt2c_core.settings.GAN``) with the form's values."""
        from nt2c_core.settings import replace

        return replace(
            GAN,
            iterations=self.iterations.get(),
            batch_size=self.batchSize.get(),
            crop=self.crop.get() or None,
            width=self.width.get(),
            spectral_weight=self.spectralWeight.get(),
            seed=self.seed.get(),
        )

    def trainStep(self):
        if not self._inProcess():  # the dedicated environment's 'nt2c train-noise-gan'
            self._runStage(
                "train-noise-gan",
                self._ganConfig(),
                "--patches",
                os.path.abspath(self._patchStack()),
                "-o",
                os.path.abspath(self._getExtraPath(MODEL)),
                "--resume",
            )
            return
        from nt2c_core.stages import train_noise_model

        train_noise_model(
            self._patchStack(), self._getExtraPath(MODEL), self._ganConfig(), self._device(), resume=True, progress=True
        )

    def createOutputStep(self):
        model = self._modelFromFile(self._getExtraPath(MODEL))
        self._defineOutputs(**{OUTPUT_MODEL: model})
        self._defineSourceRelation(self.inputPatches, model)

    def _validate(self):
        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        if self.crop.get() % SIZE_MULTIPLE:
            errors.append(f"Crop: 0 or a multiple of {SIZE_MULTIPLE}.")
        patches = self.inputPatches.get()
        if patches is not None and patches.getSize() < 2:
            errors.append("Need at least 2 noise patches: relax the extraction (lower SSIM threshold, smaller patch).")
        return errors

    def _summary(self):
        model = getattr(self, OUTPUT_MODEL, None)
        if model is None:
            return ["Not trained yet."]
        meta = model.getMetadata()
        return [f"Noise GAN trained on {meta.get('patches')} patches, crop {meta.get('crop')} px."]

    def _citations(self):
        return ["Li2022NT2C"]
