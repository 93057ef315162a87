"""Train the coarse and the fine U-Net denoisers on simulated pairs."""

import os
from enum import Enum
from pathlib import Path

import pyworkflow.protocol.params as params

from ..constants import OUTPUT_MODEL
from ..objects import NT2CModel
from .protocol_base import ProtNT2CBase

NOISE_LEVELS = ["real", "simulated"]


class TrainOutputs(Enum):
    outputModel = NT2CModel


class ProtNT2CTrainBase(ProtNT2CBase):
    """Shared form and steps: pairs from two sets matched by micName, training with checkpoints
    (Continue resumes an interrupted training), an NT2CModel out."""

    _possibleOutputs = TrainOutputs
    _stage = "coarse"
    _defaultSteps = 2000

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam("inputNoisy", params.PointerParam, pointerClass="SetOfMicrographs", important=True,
                      label="Simulated noisy micrographs", help="'noisy' output of 'simulate training pairs'.")
        form.addParam("inputClean", params.PointerParam, pointerClass="SetOfMicrographs", important=True,
                      label="Simulated clean micrographs", help="'clean' output, paired by micName.")
        self._defineStageParams(form)
        form.addSection("Training")
        form.addParam("steps", params.IntParam, default=self._defaultSteps, label="Training steps")
        form.addParam("crop", params.IntParam, default=256, label="Crop (px)", help="Multiple of 32.")
        form.addParam("batchSize", params.IntParam, default=16, label="Batch size")
        form.addParam("width", params.IntParam, default=48, expertLevel=params.LEVEL_ADVANCED,
                      label="U-Net width", help="48 as in the paper (fine: taken from the coarse model).")
        form.addParam("learningRate", params.FloatParam, default=1e-3, expertLevel=params.LEVEL_ADVANCED,
                      label="Learning rate")
        form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED, label="Random seed")
        self._defineGpuParams(form)

    def _defineStageParams(self, form):
        pass

    def _insertAllSteps(self):
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _pairsFolder(self) -> Path:
        """extra/pairs/{noisy,clean}/NAME.mrc links, matched by micName."""
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
        return folder

    def _trainConfig(self):
        from nt2c_core.training import TrainConfig

        steps = self.steps.get()
        return TrainConfig(steps=steps, batch_size=self.batchSize.get(), crop=self.crop.get(), width=self.width.get(),
                           lr=self.learningRate.get(), seed=self.seed.get(), val_every=max(steps // 10, 1),
                           checkpoint_every=max(steps // 10, 1))

    def trainStep(self):
        from nt2c_core.pairs import load_pairs
        from nt2c_core.training import train_denoiser

        train_denoiser(load_pairs(self._pairsFolder()), self._modelPath(), self._trainConfig(), resume=True,
                       device=self._device(), progress=False, metadata={"stage": self._stage},
                       **self._trainExtras())

    def _trainExtras(self) -> dict:
        return {}

    def _modelPath(self) -> str:
        return self._getExtraPath("model.pt")

    def createOutputStep(self):
        model = NT2CModel.fromFile(self._modelPath())
        self._defineOutputs(**{OUTPUT_MODEL: model})
        self._defineSourceRelation(self.inputNoisy, model)

    def _validate(self):
        errors = self._validateGpuList()
        noisy, clean = self.inputNoisy.get(), self.inputClean.get()
        if noisy is None or clean is None:
            return errors + ["Choose the simulated noisy and clean micrographs."]
        missing = {m.getMicName() for m in noisy} - {m.getMicName() for m in clean}
        if missing:
            errors.append(f"No clean micrograph for {', '.join(sorted(missing)[:3])}: use the two outputs of one "
                          "simulation.")
        if self.crop.get() % 32:
            errors.append("Crop: must be a multiple of 32.")
        return errors

    def _summary(self):
        model = getattr(self, OUTPUT_MODEL, None)
        if model is None:
            return ["Not trained yet."]
        training = model.getMetadata().get("training", {})
        return [f"{self._stage.capitalize()} U-Net: validation PSNR {training.get('val_psnr_db', 0):.2f} dB "
                f"(raw {training.get('raw_val_psnr_db', 0):.2f} dB)."]

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
    _defaultSteps = 1000

    def _defineStageParams(self, form):
        form.addParam("inputCoarse", params.PointerParam, pointerClass="NT2CModel", important=True,
                      label="Coarse model", help="The fine model starts from its weights.")
        form.addParam("inputNoiseModel", params.PointerParam, pointerClass="NT2CModel", important=True,
                      label="Noise model", help="From 'train noise GAN'.")
        form.addParam("noiseLevel", params.EnumParam, choices=NOISE_LEVELS, default=0, label="Noise level",
                      help="real: synthesized noise at the real micrographs' level; simulated: keep the "
                           "simulated noise variance, change only its texture.")

    def _trainExtras(self) -> dict:
        from nt2c_core.models.store import load_model
        from nt2c_core.noise.reweight import NoiseTransfer

        device = self._device()
        generator, _ = load_model(self.inputNoiseModel.get().getFileName(), kind="noise-gan")
        level = NOISE_LEVELS[self.noiseLevel.get()]
        return {"init": self.inputCoarse.get().getFileName(),
                "transform": NoiseTransfer(generator, self.seed.get(), device, level)}

    def _trainConfig(self):
        config = super()._trainConfig()
        config.width = self._coarseWidth() or config.width
        return config

    def _coarseWidth(self):
        return self.inputCoarse.get().getMetadata().get("architecture", {}).get("width")

    def _validate(self):
        errors = super()._validate()
        coarse, noise = self.inputCoarse.get(), self.inputNoiseModel.get()
        if coarse is not None and coarse.getKind() not in (None, "denoiser"):
            errors.append("The coarse model must be a denoiser.")
        if noise is not None and noise.getKind() != "noise-gan":
            errors.append("The noise model must come from 'train noise GAN' (kind noise-gan).")
        noisy = self.inputNoisy.get()
        for label, model in (("noise model", noise), ("coarse model", coarse)):
            if noisy is not None and model is not None and model.getPixelSize():
                if abs(model.getPixelSize() - noisy.getSamplingRate()) > 0.01 * noisy.getSamplingRate():
                    errors.append(f"The {label} was made at {model.getPixelSize():.3f} Å/px but the simulated pairs "
                                  f"are at {noisy.getSamplingRate():.3f} Å/px: simulate at the raw data's pixel size.")
        return errors
