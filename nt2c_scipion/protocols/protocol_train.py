"""Train the coarse and the fine U-Net denoisers on simulated pairs (``nt2c_core.stages``:
the same functions as ``nt2c train``/``train-fine`` and ``nt2c run``; form defaults from
``nt2c_core.settings``)."""

import os
from enum import Enum
from pathlib import Path

import pyworkflow.protocol.params as params

from nt2c_core.layout import MODEL
from nt2c_core.settings import COARSE, CONSISTENCY_REFERENCES, FINE, NOISE_LEVELS, PIXEL_MATCH, SIZE_MULTIPLE

from ..constants import CONSISTENCY_BAND_HELP, OUTPUT_MODEL
from ..objects import NT2CModel
from .protocol_base import ProtNT2CBase


class TrainOutputs(Enum):
    outputModel = NT2CModel


class ProtNT2CTrainBase(ProtNT2CBase):
    """Shared form and steps: pairs from two sets matched by micName, training with checkpoints
    (Continue resumes an interrupted training), an NT2CModel out."""

    _possibleOutputs = TrainOutputs
    _stage = "coarse"
    _defaults = COARSE

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "inputNoisy",
            params.PointerParam,
            pointerClass="SetOfMicrographs",
            important=True,
            label="Simulated noisy micrographs",
            help="'noisy' output of 'simulate training pairs'.",
        )
        form.addParam(
            "inputClean",
            params.PointerParam,
            pointerClass="SetOfMicrographs",
            important=True,
            label="Simulated clean micrographs",
            help="'clean' output, paired by micName.",
        )
        self._defineStageParams(form)
        form.addSection("Training")
        d = self._defaults
        form.addParam(
            "steps",
            params.IntParam,
            default=d.steps,
            label="Training steps",
            help="Optimizer steps (one batch of random crops each).",
        )
        form.addParam(
            "crop",
            params.IntParam,
            default=d.crop,
            label="Crop (px)",
            help=f"Side of the random training crops, a multiple of {SIZE_MULTIPLE}.",
        )
        form.addParam("batchSize", params.IntParam, default=d.batch_size, label="Batch size", help="Crops per step.")
        form.addParam(
            "width",
            params.IntParam,
            default=d.architecture["width"],
            expertLevel=params.LEVEL_ADVANCED,
            label="U-Net width",
            help="48 as in the paper, 24 is ~3x faster on CPU (fine: taken from the coarse model).",
        )
        form.addParam(
            "learningRate",
            params.FloatParam,
            default=d.lr,
            expertLevel=params.LEVEL_ADVANCED,
            label="Learning rate",
            help="Initial Adam learning rate, decayed by a cosine.",
        )
        form.addParam(
            "seed",
            params.IntParam,
            default=d.seed,
            expertLevel=params.LEVEL_ADVANCED,
            label="Random seed",
            help="The same seed and inputs give the same model.",
        )
        self._defineGpuParams(form)
        self._defineThreadParams(form)

    def _defineStageParams(self, form):
        pass

    def _insertAllSteps(self):
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _pairsFolder(self) -> Path:
        """extra/pairs/{noisy,clean}/NAME.mrc links, matched by micName, and a link to the
        simulation's params.json (its acquisition goes into the model's metadata)."""
        folder = Path(self._getExtraPath("pairs"))
        clean = {m.getMicName(): os.path.abspath(m.getFileName()) for m in self.inputClean.get()}
        for kind in ("noisy", "clean"):
            (folder / kind).mkdir(parents=True, exist_ok=True)
        for mic in self.inputNoisy.get():
            name = mic.getMicName()
            for kind, source in (("noisy", os.path.abspath(mic.getFileName())), ("clean", clean[name])):
                link = folder / kind / (Path(name).stem + ".mrc")
                if not link.exists():
                    os.symlink(source, link)
            params_json = Path(os.path.abspath(mic.getFileName())).parent.parent / "params.json"
            if params_json.is_file() and not (folder / "params.json").exists():
                os.symlink(params_json, folder / "params.json")
        return folder

    def _trainConfig(self):
        """The stage's defaults (``nt2c_core.settings``) with the form's values."""
        from nt2c_core.settings import replace

        return replace(
            self._defaults,
            steps=self.steps.get(),
            batch_size=self.batchSize.get(),
            crop=self.crop.get(),
            width=self.width.get(),
            lr=self.learningRate.get(),
            seed=self.seed.get(),
        )

    def trainStep(self):
        if not self._inProcess():  # the dedicated environment's 'nt2c train'
            self._runStage(
                "train",
                self._trainConfig(),
                "--pairs",
                self._pairsFolder().resolve(),
                "-o",
                os.path.abspath(self._modelPath()),
                "--resume",
            )
            return
        from nt2c_core.stages import train_coarse

        train_coarse(
            self._pairsFolder(), self._modelPath(), self._trainConfig(), self._device(), resume=True, progress=True
        )

    def _modelPath(self) -> str:
        return self._getExtraPath(MODEL)

    def createOutputStep(self):
        model = self._modelFromFile(self._modelPath())
        self._defineOutputs(**{OUTPUT_MODEL: model})
        self._defineSourceRelation(self.inputNoisy, model)

    def _validate(self):
        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        noisy, clean = self.inputNoisy.get(), self.inputClean.get()
        if noisy is None or clean is None:
            return errors + ["Choose the simulated noisy and clean micrographs."]
        missing = {m.getMicName() for m in noisy} - {m.getMicName() for m in clean}
        if missing:
            errors.append(
                f"No clean micrograph for {', '.join(sorted(missing)[:3])}: use the two outputs of one simulation."
            )
        if self.crop.get() % SIZE_MULTIPLE:
            errors.append(f"Crop: must be a multiple of {SIZE_MULTIPLE}.")
        return errors

    def _summary(self):
        model = getattr(self, OUTPUT_MODEL, None)
        if model is None:
            return ["Not trained yet."]
        training = model.getMetadata().get("training", {})
        return [
            f"{self._stage.capitalize()} U-Net: validation PSNR {training.get('val_psnr_db', 0):.2f} dB "
            f"(raw {training.get('raw_val_psnr_db', 0):.2f} dB)."
        ]

    def _citations(self):
        return ["Li2022NT2C"]


class ProtNT2CTrainCoarse(ProtNT2CTrainBase):
    """Train the coarse U-Net denoiser on simulated clean/noisy pairs (L2 loss)."""

    _label = "train coarse denoiser"


class ProtNT2CTrainFine(ProtNT2CTrainBase):
    """Train the fine U-Net, started from the coarse one, on noise-transferred pairs: the
    simulated signal with fresh synthesized real noise (re-weighted, eq. 4) at every step."""

    _label = "train fine denoiser"
    _stage = "fine"
    _defaults = FINE

    def _defineStageParams(self, form):
        form.addParam(
            "inputCoarse",
            params.PointerParam,
            pointerClass="NT2CModel",
            important=True,
            label="Coarse model",
            help="The fine model starts from its weights.",
        )
        form.addParam(
            "inputNoiseModel",
            params.PointerParam,
            pointerClass="NT2CModel,SetOfParticles",
            important=True,
            label="Noise model or noise patches",
            help="A noise GAN from 'train noise GAN' (the paper), or the noise patches of 'extract noise "
            "patches' themselves, tiled into noise fields (no GAN; the default of 'nt2c run' and of "
            "the one-click protocol, which denoised real micrographs better).",
        )
        form.addParam(
            "noiseLevel",
            params.EnumParam,
            choices=list(NOISE_LEVELS),
            default=0,
            label="Noise level",
            help="real: synthesized noise at the real micrographs' level; simulated: keep the "
            "simulated noise variance, change only its texture.",
        )
        form.addParam(
            "inputMicrographs",
            params.PointerParam,
            pointerClass="SetOfMicrographs",
            allowsNull=True,
            label="Real micrographs",
            help="The raw micrographs the noise came from (e.g. the input of 'extract noise patches'). "
            "The fine model is then kept equal to them at the particle scale (data consistency), "
            "so it cannot paint or erase particles; without them that term is off.",
        )
        form.addParam(
            "consistency",
            params.FloatParam,
            default=FINE.consistency,
            expertLevel=params.LEVEL_ADVANCED,
            label="Data-consistency weight",
            help="Weight of the real-micrograph term against the simulated pairs' loss; 0 = off (the "
            "paper's fine stage). Measured on real ribosome micrographs: 0 paints (low-pass agreement "
            "0.81); 10 (the default, with the general model's band) keeps 0.97 with eq. 5 SNR 24 dB "
            "and picking AP above raw.",
        )
        form.addParam(
            "consistencyReference",
            params.EnumParam,
            choices=list(CONSISTENCY_REFERENCES),
            default=0,
            expertLevel=params.LEVEL_ADVANCED,
            label="Data-consistency band",
            help=CONSISTENCY_BAND_HELP,
        )

    def trainStep(self):
        micrographs = self._realMicrographs()
        if not self._inProcess():  # the dedicated environment's 'nt2c train-fine'
            source = "--noise-patches" if self._noiseIsPatches() else "--noise-model"
            self._runStage(
                "train-fine",
                self._trainConfig(),
                "--pairs",
                self._pairsFolder().resolve(),
                "--coarse",
                os.path.abspath(self.inputCoarse.get().getFileName()),
                source,
                os.path.abspath(self._noiseFile()),
                "-o",
                os.path.abspath(self._modelPath()),
                "--resume",
                "--noise-level",
                NOISE_LEVELS[self.noiseLevel.get()],
                *(["--micrographs", *micrographs] if micrographs else []),
            )
            return
        from nt2c_core.stages import train_fine

        train_fine(
            self._pairsFolder(),
            self.inputCoarse.get().getFileName(),
            self._noiseFile(),
            self._modelPath(),
            self._trainConfig(),
            self._device(),
            NOISE_LEVELS[self.noiseLevel.get()],
            resume=True,
            progress=True,
            micrographs=micrographs,
        )

    def _noiseIsPatches(self) -> bool:
        return not isinstance(self.inputNoiseModel.get(), NT2CModel)

    def _noiseFile(self) -> str:
        """The GAN model file, or the noise patches written as one stack."""
        if self._noiseIsPatches():
            from nt2c_core.layout import NOISE_STACK

            from .protocol_noise import patch_stack

            return patch_stack(self.inputNoiseModel.get(), self._getExtraPath(NOISE_STACK))
        return self.inputNoiseModel.get().getFileName()

    def _realMicrographs(self):
        """Absolute paths of the real micrographs of the data-consistency term ([] when none)."""
        mics = self.inputMicrographs.get()
        return [os.path.abspath(m.getFileName()) for m in mics] if mics is not None else []

    def _trainConfig(self):
        """As the coarse model's, with its architecture (the fine model starts from its weights)."""
        from nt2c_core.settings import replace

        config = super()._trainConfig()
        return replace(
            config,
            architecture=self.inputCoarse.get().getMetadata().get("architecture") or config.architecture,
            consistency=self.consistency.get(),
            consistency_reference=CONSISTENCY_REFERENCES[self.consistencyReference.get()],
        )

    def _validate(self):
        errors = super()._validate()
        coarse, noise = self.inputCoarse.get(), self.inputNoiseModel.get()
        if coarse is not None and coarse.getKind() not in (None, "denoiser"):
            errors.append("The coarse model must be a denoiser.")
        if isinstance(noise, NT2CModel) and noise.getKind() != "noise-gan":
            errors.append(
                "The noise model must come from 'train noise GAN' (kind noise-gan), or give the noise "
                "patches of 'extract noise patches'."
            )
        noisy, mics = self.inputNoisy.get(), self.inputMicrographs.get()
        if self.consistency.get() < 0:
            errors.append("Data-consistency weight: must be 0 (off) or positive.")
        if (
            noisy is not None
            and mics is not None
            and abs(mics.getSamplingRate() - noisy.getSamplingRate()) > PIXEL_MATCH * noisy.getSamplingRate()
        ):
            errors.append(
                f"The real micrographs are at {mics.getSamplingRate():.3f} Å/px but the simulated pairs at "
                f"{noisy.getSamplingRate():.3f} Å/px: simulate at the raw data's pixel size."
            )
        for label, model in (("noise model", noise), ("coarse model", coarse)):
            pixel = (
                None
                if model is None
                else (model.getPixelSize() if isinstance(model, NT2CModel) else model.getSamplingRate())
            )
            if noisy is not None and pixel:
                if abs(pixel - noisy.getSamplingRate()) > PIXEL_MATCH * noisy.getSamplingRate():
                    errors.append(
                        f"The {label} was made at {pixel:.3f} Å/px but the simulated pairs "
                        f"are at {noisy.getSamplingRate():.3f} Å/px: simulate at the raw data's pixel size."
                    )
        return errors
