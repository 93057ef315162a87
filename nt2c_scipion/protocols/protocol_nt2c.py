"""NT2C in one click: raw micrographs + an atomic model -> every NT2C stage as a Scipion step ->
the fine model and the denoised micrographs.

The work is ``nt2c_core.pipeline`` in the protocol's extra folder (``extra/work``): one step per
stage (simulate, coarse, noise, gan, fine, denoised). A finished stage leaves ``DONE.json``, so
Scipion's *Continue* after an interruption skips finished stages and resumes an interrupted
training from its checkpoint; a stage that reruns marks the later ones stale.
"""

import json
import os
from enum import Enum
from pathlib import Path

import pyworkflow.protocol.params as params
from pwem.objects import SetOfMicrographs

from ..constants import OUTPUT_MICROGRAPHS, OUTPUT_MODEL
from ..objects import NT2CModel
from .protocol_base import ProtNT2CSimulationBase
from .protocol_noise import RULE_CHOICES, RULES

FEW_PATCHES = ("go on with the best model available", "stop")

STAGES = ("simulate", "coarse", "noise", "gan", "fine", "denoised")  # = nt2c_core.pipeline.STAGES (tested),
# copied so that loading the plugin's menu does not import torch


class NT2COutputs(Enum):
    outputModel = NT2CModel
    outputMicrographs = SetOfMicrographs


class ProtNT2C(ProtNT2CSimulationBase):
    """Train NT2C for this data set and denoise it: simulate clean/noisy pairs of the atomic model
    with the micrographs' acquisition, train the coarse U-Net, extract pure-noise background
    patches from the raw micrographs, learn their noise with a WGAN-GP, train the fine U-Net on
    simulated signal carrying that noise, and denoise every micrograph. Resumable with Continue."""

    _label = "NT2C (one click)"
    _possibleOutputs = NT2COutputs

    # --- form -----------------------------------------------------------------------------
    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam("inputMicrographs", params.PointerParam, pointerClass="SetOfMicrographs", important=True,
                      label="Raw micrographs", help="Motion-corrected micrographs with their acquisition.")
        self._defineSimulationInputParams(form)
        form.addSection("Training")
        form.addParam("simCount", params.IntParam, default=64, label="Simulated micrographs")
        form.addParam("simSize", params.IntParam, default=512, label="Simulated size (px)",
                      help="Side of each simulated micrograph.")
        form.addParam("particles", params.IntParam, default=20, label="Particles per simulated micrograph")
        form.addParam("coarseSteps", params.IntParam, default=2000, label="Coarse training steps")
        form.addParam("fineSteps", params.IntParam, default=1000, label="Fine training steps")
        form.addParam("ganIterations", params.IntParam, default=2000, label="Noise GAN iterations")
        form.addParam("width", params.IntParam, default=48, expertLevel=params.LEVEL_ADVANCED,
                      label="U-Net width", help="48 as in the paper; 24 is ~3x faster on CPU.")
        form.addParam("crop", params.IntParam, default=256, expertLevel=params.LEVEL_ADVANCED,
                      label="Training crop (px)", help="Multiple of 32.")
        form.addParam("noiseRule", params.EnumParam, choices=RULE_CHOICES, default=0, label="Noise patch rule",
                      help="Particle mask: particles are found on the shipped general model's output and noise "
                           "patches are cut from the area between them (any particle density; the particle "
                           "diameter comes from the atomic model). SSIM tiles: the paper's rule on the coarse "
                           "model's output; needs empty d x d tiles, which dense fields do not have.")
        form.addParam("noisePatch", params.IntParam, default=0, label="Noise patch size d (px)",
                      help="0 = automatic (particle mask: the largest multiple of 32 px giving about 256 patches; "
                           "SSIM tiles: two particle diameters). SSIM tiles are scanned with step d/2.")
        form.addParam("ssimThreshold", params.FloatParam, default=0.7, label="SSIM threshold",
                      condition="noiseRule == 1",
                      help="A tile is background when all pairwise SSIMs of its 4 sub-patches exceed this.")
        form.addParam("minNoisePatches", params.IntParam, default=32, expertLevel=params.LEVEL_ADVANCED,
                      label="Minimum noise patches",
                      help="Fewer patches than this cannot train the noise model; see 'If too few noise patches'.")
        form.addParam("fewPatches", params.EnumParam, choices=FEW_PATCHES, default=0,
                      expertLevel=params.LEVEL_ADVANCED, label="If too few noise patches",
                      help="Go on: warn with the measured free area, skip the noise GAN and the fine model, and "
                           "denoise with the better of the general and coarse models (no hours lost). Stop: fail "
                           "at the noise stage with advice; fix the settings and Continue.")
        form.addParam("coarseFromGeneral", params.BooleanParam, default=True, expertLevel=params.LEVEL_ADVANCED,
                      label="Start the coarse model from the general model?",
                      help="Yes: the coarse U-Net starts from the shipped general model (trained on simulation "
                           "across acquisitions; its architecture, width 24, is kept) and is refined on this data "
                           "set's simulation. No: from scratch, as in the paper (width as set above).")
        form.addParam("chooseModel", params.BooleanParam, default=True, expertLevel=params.LEVEL_ADVANCED,
                      label="Choose the best model?",
                      help="Yes: before denoising, score the general, coarse and fine models on held-out simulated "
                           "micrographs (PSNR) and on the raw micrographs (agreement with the raw data at the "
                           "particle scale, so a model that erases unfamiliar particles is not chosen), and "
                           "denoise with the best; the summary shows the table. No: always the fine model.")
        form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED, label="Random seed")
        self._defineGpuParams(form)

    # --- steps ----------------------------------------------------------------------------
    def _insertAllSteps(self):
        # the config is the step's argument: after a change of settings, Continue reruns it and
        # the stages after it (finished stages are still skipped by the pipeline's DONE files)
        self._insertFunctionStep(self.convertInputStep, json.dumps(self._pipelineConfig().to_dict()))
        for stage in STAGES:
            self._insertFunctionStep(self.stageStep, stage)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def convertInputStep(self, config_json):
        """Write the pipeline config (raw micrograph list, structure, acquisition, settings)."""
        from nt2c_core.io import write_json

        write_json(self._configPath(), json.loads(config_json))

    def stageStep(self, stage):
        from nt2c_core.pipeline import PipelineConfig, run_pipeline

        config = PipelineConfig.from_file(self._configPath())
        config.device = self._device()
        run_pipeline(config, self._workDir(), progress=False, only=[stage])

    def createOutputStep(self):
        work = self._workDir()
        done = json.loads((work / "denoised" / "DONE.json").read_text())
        model = NT2CModel.fromFile(done.get("model") or work / "fine" / "model.pt")  # the model that denoised
        in_set = self.inputMicrographs.get()
        out_set = self._createSetOfMicrographs()
        out_set.copyInfo(in_set)
        for mic in in_set:
            path = work / "denoised" / (Path(mic.getFileName()).stem + ".mrc")
            if path.exists():
                new = mic.clone()
                new.setFileName(str(path))
                out_set.append(new)
        self._defineOutputs(**{OUTPUT_MODEL: model, OUTPUT_MICROGRAPHS: out_set})
        self._defineSourceRelation(self.inputMicrographs, out_set)
        self._defineSourceRelation(self.inputMicrographs, model)

    # --- helpers --------------------------------------------------------------------------
    def _workDir(self) -> Path:
        return Path(self._getExtraPath("work"))

    def _configPath(self) -> str:
        return self._getExtraPath("nt2c_config.json")

    def _pipelineConfig(self):
        from nt2c_core.denoise import TileSettings
        from nt2c_core.noise.extract import ExtractionSettings
        from nt2c_core.noise.synthesize import GANConfig
        from nt2c_core.pipeline import PipelineConfig
        from nt2c_core.simulate import SimulationConfig
        from nt2c_core.training import TrainConfig

        in_set = self.inputMicrographs.get()
        acquisition = self._acquisition()
        seed = self.seed.get()
        size = self.simSize.get()
        simulation = SimulationConfig(acquisition, size=(size, size), particles=self.particles.get(),
                                      defocus_um=self._defocusRange(), count=self.simCount.get(),
                                      library_size=200, seed=seed)
        crop, width = self.crop.get(), self.width.get()
        coarse_steps, fine_steps = self.coarseSteps.get(), self.fineSteps.get()
        patch = self.noisePatch.get() or None
        gan_crop = min(128, (patch // 32) * 32) if patch else None
        return PipelineConfig(
            raw=[os.path.abspath(m.getFileName()) for m in in_set], structures=[os.path.abspath(self._structurePath())],
            simulation=simulation,
            coarse=TrainConfig(steps=coarse_steps, crop=crop, width=width, seed=seed,
                               val_every=max(coarse_steps // 5, 1), checkpoint_every=max(coarse_steps // 10, 1)),
            extraction=ExtractionSettings(patch=patch, threshold=self.ssimThreshold.get(),
                                          rule=RULES[self.noiseRule.get()]),
            gan=GANConfig(iterations=self.ganIterations.get(), crop=gan_crop, seed=seed,
                          checkpoint_every=max(self.ganIterations.get() // 10, 1)),
            fine=TrainConfig(steps=fine_steps, crop=min(crop, (patch // 32) * 32) if patch else crop, width=width,
                             lr=5e-4, seed=seed, val_every=max(fine_steps // 5, 1),
                             checkpoint_every=max(fine_steps // 10, 1)),
            tiles=TileSettings(), min_noise_patches=self.minNoisePatches.get(), calibrate=self.calibrate.get(),
            few_patches=("continue", "stop")[self.fewPatches.get()], choose_model=self.chooseModel.get(),
            coarse_init="general" if self.coarseFromGeneral.get() else "none")

    # --- info -----------------------------------------------------------------------------
    def _validate(self):
        errors = self._validateGpuList()
        in_set = self.inputMicrographs.get()
        if in_set is None:
            return errors + ["Choose the raw micrographs."]
        errors += self._validateSimulationInputs()
        for name, multiple in (("crop", 32), ("noisePatch", 32 if self.noiseRule.get() == 0 else 2)):
            if getattr(self, name).get() % multiple:
                errors.append(f"{self.getParam(name).label.get()}: must be a multiple of {multiple}.")
        if not errors:  # every stage's settings, checked as 'nt2c run' checks them, before hours of work
            from nt2c_core.errors import NT2CError

            try:
                self._pipelineConfig().validate()
            except NT2CError as exc:
                errors.append(f"Settings: {exc}")
        return errors

    def _summary(self):
        done = [s for s in STAGES if (self._workDir() / s / "DONE.json").exists()]
        lines = [f"Stages complete: {', '.join(done) if done else 'none'}."]
        noise = self._workDir() / "noise" / "DONE.json"
        if noise.exists():
            info = json.loads(noise.read_text())
            lines.append(f"Noise patches: {info.get('patches')} of {info.get('patch')} px from "
                         f"{len(info.get('per_micrograph', {}))} micrographs.")
            if info.get("insufficient"):
                lines.append(f"WARNING: {info['insufficient']}; the GAN and fine stages were skipped.")
        selection = self._workDir() / "denoised" / "selection.json"
        if selection.exists():
            info = json.loads(selection.read_text())
            lines += ["Model choice:", *info["table"].splitlines(), info["reason"]]
        model = getattr(self, OUTPUT_MODEL, None)
        if model is not None:
            training = model.getMetadata().get("training", {})
            if training.get("val_psnr_db") is not None:
                lines.append(f"Fine model validation PSNR {training['val_psnr_db']:.2f} dB.")
        return lines

    def _methods(self):
        return ["Micrographs were denoised with NT2C [Li2022NT2C] trained on simulated pairs of the atomic "
                "model carrying the data set's own background noise."]

    def _citations(self):
        return ["Li2022NT2C"]
