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

from nt2c_core.layout import WorkLayout
from nt2c_core.settings import (
    COARSE,
    COARSE_TRANSFER,
    CONSISTENCY_REFERENCES,
    EXTRACTION,
    FINE,
    GAN,
    MIN_NOISE_PATCHES,
    NOISE_MODELS,
    RULES,
    SIZE_MULTIPLE,
    STAGES,
    PipelineConfig,
)

from ..constants import CONSISTENCY_BAND_HELP, ICE_GRADIENT_HELP, OUTPUT_MICROGRAPHS, OUTPUT_MODEL
from ..objects import NT2CModel
from .protocol_base import ProtNT2CSimulationBase
from .protocol_denoise import output_name
from .protocol_noise import RULE_CHOICES

FEW_PATCHES = ("go on with the best model available", "stop")
NOISE_MODEL_CHOICES = ("WGAN-GP (paper)", "real patches tiled")  # in the order of NOISE_MODELS


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
        form.addParam(
            "inputMicrographs",
            params.PointerParam,
            pointerClass="SetOfMicrographs",
            important=True,
            label="Raw micrographs",
            help="Motion-corrected micrographs with their acquisition.",
        )
        self._defineSimulationInputParams(form)
        form.addSection("Training")
        form.addParam(
            "simCount",
            params.IntParam,
            default=64,
            label="Simulated micrographs",
            help="Clean/noisy training pairs simulated from the atomic model (10 % are held out for "
            "validation and the model choice).",
        )
        form.addParam(
            "simSize",
            params.IntParam,
            default=512,
            label="Simulated size (px)",
            help="Side of each simulated micrograph.",
        )
        form.addParam(
            "particles",
            params.IntParam,
            default=20,
            label="Particles per simulated micrograph",
            help="Match the crowding of the real micrographs (particles per area).",
        )
        self._defineCarbonParam(form)
        form.addParam(
            "iceGradient",
            params.FloatParam,
            default=0.0,
            expertLevel=params.LEVEL_ADVANCED,
            label="Simulated ice-thickness gradient (fraction)",
            help=ICE_GRADIENT_HELP,
        )
        form.addParam(
            "coarseSteps",
            params.IntParam,
            default=COARSE.steps,
            label="Coarse training steps",
            help="Optimizer steps of the coarse U-Net on the simulated pairs.",
        )
        form.addParam(
            "fineSteps",
            params.IntParam,
            default=FINE.steps,
            label="Fine training steps",
            help="Optimizer steps of the fine U-Net (started from the coarse one) on noise-transferred pairs.",
        )
        form.addParam(
            "fineConsistency",
            params.FloatParam,
            default=FINE.consistency,
            expertLevel=params.LEVEL_ADVANCED,
            label="Fine: data-consistency weight",
            help="Weight of the term that keeps the fine model's output at the particle scale between the "
            "input micrographs and the general model's output, so it cannot paint or erase particles; "
            "0 = off (the paper's fine stage, which paints on real data with strong particle-band "
            "noise).",
        )
        form.addParam(
            "fineConsistencyReference",
            params.EnumParam,
            choices=list(CONSISTENCY_REFERENCES),
            default=0,
            expertLevel=params.LEVEL_ADVANCED,
            label="Fine: data-consistency band",
            help=CONSISTENCY_BAND_HELP,
        )
        form.addParam(
            "width",
            params.IntParam,
            default=COARSE.architecture["width"],
            expertLevel=params.LEVEL_ADVANCED,
            label="U-Net width",
            help="48 as in the paper; 24 is ~3x faster on CPU (ignored when the "
            "coarse model starts from the general model, whose width it keeps).",
        )
        form.addParam(
            "crop",
            params.IntParam,
            default=COARSE.crop,
            expertLevel=params.LEVEL_ADVANCED,
            label="Training crop (px)",
            help=f"Random training crops, a multiple of {SIZE_MULTIPLE}.",
        )
        form.addParam(
            "batchSize",
            params.IntParam,
            default=COARSE.batch_size,
            expertLevel=params.LEVEL_ADVANCED,
            label="Batch size",
            help="Crops per training step (coarse and fine).",
        )
        form.addParam(
            "noiseRule",
            params.EnumParam,
            choices=RULE_CHOICES,
            default=0,
            label="Noise patch rule",
            help="Particle mask: particles are found on the shipped general model's output and noise "
            "patches are cut from the area between them (any particle density; the particle "
            "diameter comes from the atomic model). SSIM tiles: the paper's rule on the coarse "
            "model's output; needs empty d x d tiles, which dense fields do not have.",
        )
        form.addParam(
            "noisePatch",
            params.IntParam,
            default=0,
            label="Noise patch size d (px)",
            help="0 = automatic (particle mask: the largest multiple of 32 px giving about 256 patches; "
            "SSIM tiles: two particle diameters). SSIM tiles are scanned with step d/2.",
        )
        form.addParam(
            "ssimThreshold",
            params.FloatParam,
            default=EXTRACTION.threshold,
            label="SSIM threshold",
            condition="noiseRule == 1",
            help="A tile is background when all pairwise SSIMs of its 4 sub-patches exceed this.",
        )
        form.addParam(
            "minNoisePatches",
            params.IntParam,
            default=MIN_NOISE_PATCHES,
            expertLevel=params.LEVEL_ADVANCED,
            label="Minimum noise patches",
            help="Fewer patches than this cannot train the noise model; see 'If too few noise patches'.",
        )
        form.addParam(
            "fewPatches",
            params.EnumParam,
            choices=FEW_PATCHES,
            default=0,
            expertLevel=params.LEVEL_ADVANCED,
            label="If too few noise patches",
            help="Go on: warn with the measured free area, skip the noise GAN and the fine model, and "
            "denoise with the better of the general and coarse models (no hours lost). Stop: fail "
            "at the noise stage with advice; fix the settings and Continue.",
        )
        form.addParam(
            "coarseFromGeneral",
            params.BooleanParam,
            default=True,
            expertLevel=params.LEVEL_ADVANCED,
            label="Start the coarse model from the general model?",
            help="Yes: the coarse U-Net starts from the shipped general model (trained on simulation "
            "across acquisitions; its architecture, width 24, is kept) and is refined on this data "
            "set's simulation at a quarter of the from-scratch learning rate (2.5e-4), so it keeps "
            "what the general model learned. No: from scratch at 1e-3, as in the paper (width as "
            "set above).",
        )
        form.addParam(
            "chooseModel",
            params.BooleanParam,
            default=True,
            expertLevel=params.LEVEL_ADVANCED,
            label="Choose the best model?",
            help="Yes: before denoising, score the general, coarse and fine models on held-out simulated "
            "micrographs (PSNR) and on the raw micrographs (agreement with the raw data at the "
            "particle scale, so a model that erases unfamiliar particles is not chosen), and "
            "denoise with the best; the summary shows the table. No: always the fine model.",
        )
        form.addParam(
            "noiseModel",
            params.EnumParam,
            choices=NOISE_MODEL_CHOICES,
            default=NOISE_MODELS.index(PipelineConfig.noise_model),
            expertLevel=params.LEVEL_ADVANCED,
            label="Noise model",
            help="Where the fine model's real noise comes from: the patches themselves tiled into noise "
            "fields (default, no GAN stage), or the paper's WGAN-GP trained on the noise patches. On "
            "real ribosome micrographs the GAN's 128 px fields carried 20-25 % less noise power at "
            "the particle's frequencies than the real patches, and its fine model hardly denoised.",
        )
        # after noiseModel: pyworkflow binds a condition's names to the parameters defined before it
        form.addParam(
            "ganIterations",
            params.IntParam,
            default=GAN.iterations,
            label="Noise GAN iterations",
            condition=f"noiseModel == {NOISE_MODELS.index('gan')}",
            help="Generator steps of the WGAN-GP noise model (only with the GAN noise model).",
        )
        form.addParam(
            "seed",
            params.IntParam,
            default=0,
            expertLevel=params.LEVEL_ADVANCED,
            label="Random seed",
            help="The same seed and inputs give the same models.",
        )
        self._defineGpuParams(form)
        self._defineThreadParams(form)

    # --- steps ----------------------------------------------------------------------------
    def _insertAllSteps(self):
        # the config is the step's argument: after a change of settings, Continue reruns it and
        # the stages after it (finished stages are still skipped by the pipeline's DONE files)
        self._insertFunctionStep(self.convertInputStep, json.dumps(self._pipelineConfig().to_dict()))
        for stage in STAGES:
            self._insertFunctionStep(self.stageStep, stage)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def convertInputStep(self, config_json):
        """Write the pipeline config (raw micrograph list, structure, acquisition, settings). The
        raw micrographs enter the pipeline as links named ``<objId>_<stem>``, so two micrographs
        of the same name from different folders give two outputs."""
        from nt2c_core.io import write_json

        config = json.loads(config_json)
        links = Path(self._getExtraPath("raw"))
        links.mkdir(parents=True, exist_ok=True)
        raw = []
        for mic in self.inputMicrographs.get():
            src = Path(os.path.abspath(mic.getFileName()))
            link = links / (Path(output_name(mic.getObjId(), src.name)).stem + src.suffix)
            if not link.is_symlink():
                link.symlink_to(src)
            raw.append(str(link))
        config["raw"] = raw
        write_json(self._configPath(), config)

    def stageStep(self, stage):
        if not self._inProcess():  # the dedicated environment's 'nt2c run --stage STAGE'
            self._runNT2C(
                "run",
                os.path.abspath(self._configPath()),
                "-o",
                self._workDir().resolve(),
                "--stage",
                stage,
                "--device",
                self._cliDevice(),
            )
            return
        from nt2c_core.pipeline import run_pipeline

        config = PipelineConfig.from_file(self._configPath())
        config.device = self._device()
        run_pipeline(config, self._workDir(), progress=True, only=[stage])

    def createOutputStep(self):
        work = self._workDir()
        layout = WorkLayout(work)
        done = json.loads(layout.done("denoised").read_text())
        model = self._modelFromFile(done.get("model") or layout.model("fine"))  # the model that denoised
        in_set = self.inputMicrographs.get()
        out_set = self._createSetOfMicrographs()
        out_set.copyInfo(in_set)
        for mic in in_set:
            path = layout.denoised / output_name(mic.getObjId(), mic.getFileName())
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
        from nt2c_core.settings import replace

        in_set = self.inputMicrographs.get()
        seed = self.seed.get()
        size = self.simSize.get()
        simulation = self._trainingSimulation(size, self.simCount.get())
        train = dict(crop=self.crop.get(), width=self.width.get(), batch_size=self.batchSize.get(), seed=seed)
        return PipelineConfig(
            raw=[os.path.abspath(m.getFileName()) for m in in_set],
            structures=[os.path.abspath(self._structurePath())],
            simulation=simulation,
            coarse=replace(
                COARSE_TRANSFER if self.coarseFromGeneral.get() else COARSE, steps=self.coarseSteps.get(), **train
            ),
            extraction=replace(
                EXTRACTION,
                patch=self.noisePatch.get() or None,
                threshold=self.ssimThreshold.get(),
                rule=RULES[self.noiseRule.get()],
            ),
            gan=replace(GAN, iterations=self.ganIterations.get(), seed=seed),
            fine=replace(
                FINE,
                steps=self.fineSteps.get(),
                consistency=self.fineConsistency.get(),
                consistency_reference=CONSISTENCY_REFERENCES[self.fineConsistencyReference.get()],
                **train,
            ),
            min_noise_patches=self.minNoisePatches.get(),
            calibrate=self.calibrate.get(),
            few_patches=("continue", "stop")[self.fewPatches.get()],
            choose_model=self.chooseModel.get(),
            coarse_init="general" if self.coarseFromGeneral.get() else "none",
            noise_model=NOISE_MODELS[self.noiseModel.get()],
        )

    # --- info -----------------------------------------------------------------------------
    def _validate(self):
        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        in_set = self.inputMicrographs.get()
        if in_set is None:
            return errors + ["Choose the raw micrographs."]
        errors += self._validateSimulationInputs()
        for name, multiple in (
            ("crop", SIZE_MULTIPLE),
            ("noisePatch", SIZE_MULTIPLE if self.noiseRule.get() == 0 else 2),
        ):
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
        layout = WorkLayout(self._workDir())
        done = [s for s in STAGES if layout.done(s).exists()]
        lines = [f"Stages complete: {', '.join(done) if done else 'none'}."]
        lines += self._simulationUsed(layout)
        noise = layout.done("noise")
        if noise.exists():
            info = json.loads(noise.read_text())
            lines.append(
                f"Noise patches: {info.get('patches')} of {info.get('patch')} px from "
                f"{len(info.get('per_micrograph', {}))} micrographs."
            )
            if info.get("insufficient"):
                lines.append(f"WARNING: {info['insufficient']}; the GAN and fine stages were skipped.")
        selection = layout.selection
        if selection.exists():
            info = json.loads(selection.read_text())
            lines += ["Model choice:", *info["table"].splitlines(), info["reason"]]
        model = getattr(self, OUTPUT_MODEL, None)
        if model is not None:
            training = model.getMetadata().get("training", {})
            if training.get("val_psnr_db") is not None:
                lines.append(f"Fine model validation PSNR {training['val_psnr_db']:.2f} dB.")
        return lines

    @staticmethod
    def _simulationUsed(layout) -> list:
        """The acquisition the simulation actually used (calibrated values when calibration ran),
        from the simulated set's params.json, not the form's values."""
        params = layout.pairs / "params.json"
        if not params.exists():
            return []
        config = json.loads(params.read_text()).get("config", {})
        done = json.loads(layout.done("simulate").read_text()) if layout.done("simulate").exists() else {}
        source = (
            "calibrated from the micrographs"
            if "calibrated" in done
            else "from a reused calibration"
            if "calibration_reused" in done
            else "as set in the form"
        )
        lo, hi = config.get("defocus_um", [None, None])
        acq = config.get("acquisition", {})
        return [
            f"Simulation used ({source}): defocus {lo}-{hi} µm, dose {acq.get('dose')} e/Å², "
            f"ice {config.get('ice_thickness')} Å, {acq.get('pixel_size')} Å/px, detector {acq.get('detector')}."
        ]

    def _methods(self):
        return [
            "Micrographs were denoised with NT2C [Li2022NT2C] trained on simulated pairs of the atomic "
            "model carrying the data set's own background noise."
        ]

    def _citations(self):
        return ["Li2022NT2C"]
