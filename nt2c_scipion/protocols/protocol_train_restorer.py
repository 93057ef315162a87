"""Train an SR3 particle restorer on particles simulated from the sample's atomic model with the
data set's acquisition (voltage, Cs, amplitude contrast, pixel size, box, defocus range from the
particles' CTFs)."""

import json
import os
from enum import Enum

import pyworkflow.protocol.params as params

from nt2c_core.settings import DETECTORS, RESTORER, RESTORER_METHODS, ParticleSimulationConfig

from ..constants import OUTPUT_MODEL
from ..objects import NT2CModel
from .protocol_base import ProtNT2CSimulationBase

SIM = ParticleSimulationConfig()


class TrainRestorerOutputs(Enum):
    outputModel = NT2CModel


class ProtNT2CTrainRestorer(ProtNT2CSimulationBase):
    """Simulate particle images of your atomic model with the acquisition of your particles (or
    micrographs) and train the SR3 restorer on them: a conditional diffusion U-Net, then a light
    post-processing U-Net. The model restores particles in 'restore particles (SR3)'."""

    _label = "train particle restorer (SR3)"
    _possibleOutputs = TrainRestorerOutputs

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "inputSet",
            params.PointerParam,
            pointerClass="SetOfParticles,SetOfMicrographs",
            important=True,
            label="Particles (or micrographs)",
            help="The data the restorer is for: its acquisition (kV, Cs, amplitude contrast) and pixel "
            "size are simulated; particles also give the box size and, with CTFs, the defocus range.",
        )
        self._defineStructureParams(form)
        form.addSection("Simulation")
        form.addParam(
            "boxSize",
            params.IntParam,
            default=0,
            label="Box size (px)",
            help="Side of the simulated particle images; 0 = the input particles' box (needed for micrographs).",
        )
        form.addParam(
            "count",
            params.IntParam,
            default=4000,
            label="Training particles",
            help="Number of simulated particle images (uniform random orientations).",
        )
        line = form.addLine("Defocus range (µm)", help="Used when the input particles have no CTF.")
        line.addParam(
            "defocusMin",
            params.FloatParam,
            default=SIM.defocus_range_um[0],
            label="min",
            help="Smallest defocus [µm, underfocus positive].",
        )
        line.addParam(
            "defocusMax", params.FloatParam, default=SIM.defocus_range_um[1], label="max", help="Largest defocus [µm]."
        )
        form.addParam(
            "dose",
            params.FloatParam,
            default=40.0,
            label="Dose (e/Å²)",
            help="Total exposure of the images the particles were extracted from.",
        )
        form.addParam(
            "detector",
            params.EnumParam,
            choices=list(DETECTORS),
            default=0,
            label="Detector",
            help="Detector model (MTF, DQE) of the simulation.",
        )
        form.addParam(
            "iceThickness",
            params.FloatParam,
            default=SIM.ice_thickness,
            expertLevel=params.LEVEL_ADVANCED,
            label="Ice thickness (Å)",
            help="Amorphous ice simulated around each particle (0 = none).",
        )
        form.addSection("Training")
        form.addParam(
            "method",
            params.EnumParam,
            choices=["SR3 diffusion", "U-Net"],
            default=RESTORER_METHODS.index(RESTORER.method),
            label="Restorer",
            help="SR3: the conditional diffusion restorer and its post-processing U-Net. U-Net: the NT2C "
            "U-Net trained on the same simulated pairs (one pass, no draws): the baseline a generative "
            "restorer has to beat. Both restore in 'restore particles (SR3)' and run its invention check.",
        )
        form.addParam(
            "steps",
            params.IntParam,
            default=RESTORER.steps,
            label="Diffusion training steps",
            help="Adam steps of the diffusion U-Net (cosine decay); a GPU runs the default in minutes.",
        )
        form.addParam(
            "refineSteps",
            params.IntParam,
            default=RESTORER.refine_steps,
            condition="method == 0",
            label="Post-processing steps",
            help="Training steps of the post-processing U-Net (0 = none).",
        )
        form.addParam(
            "width",
            params.IntParam,
            default=RESTORER.width,
            expertLevel=params.LEVEL_ADVANCED,
            label="Network width",
            help="Channels of the diffusion U-Net at full resolution.",
        )
        form.addParam(
            "batchSize",
            params.IntParam,
            default=RESTORER.batch_size,
            expertLevel=params.LEVEL_ADVANCED,
            label="Batch size",
            help="Particles per training step.",
        )
        form.addParam(
            "learningRate",
            params.FloatParam,
            default=RESTORER.lr,
            expertLevel=params.LEVEL_ADVANCED,
            label="Learning rate",
            help="Adam's initial learning rate of the diffusion U-Net.",
        )
        form.addParam(
            "emptyFraction",
            params.FloatParam,
            default=RESTORER.empty_fraction,
            expertLevel=params.LEVEL_ADVANCED,
            label="Empty training boxes (fraction)",
            help="Fraction of training boxes that hold only noise, with an empty box as the target: the "
            "restorer learns that empty boxes exist instead of painting its mean particle into noise "
            "(measured: a quarter of empty boxes halves what it paints into pure noise). 0 = every box "
            "holds a particle.",
        )
        form.addParam(
            "seed",
            params.IntParam,
            default=RESTORER.seed,
            expertLevel=params.LEVEL_ADVANCED,
            label="Random seed",
            help="The same seed and settings give the same model.",
        )
        self._defineGpuParams(form)
        self._defineThreadParams(form)

    # --- helpers --------------------------------------------------------------------------
    def _isParticles(self) -> bool:
        from pwem.objects import SetOfParticles

        return isinstance(self.inputSet.get(), SetOfParticles)

    def _box(self) -> int:
        if self.boxSize.get():
            return self.boxSize.get()
        in_set = self.inputSet.get()
        return int(in_set.getDim()[0]) if self._isParticles() and in_set.getDim() else 0

    def _defocusRange(self) -> tuple:
        if self._isParticles() and self.inputSet.get().hasCTF():
            values = [
                d / 1e4
                for p in self.inputSet.get().iterItems()
                for d in (p.getCTF().getDefocusU(), p.getCTF().getDefocusV())
            ]
            if values:
                return round(min(values), 3), round(max(values), 3)
        return self.defocusMin.get(), self.defocusMax.get()

    def _simulation(self) -> ParticleSimulationConfig:
        from nt2c_core.acquisition import Acquisition

        in_set = self.inputSet.get()
        acq = in_set.getAcquisition()
        acquisition = Acquisition(
            voltage_kv=acq.getVoltage(),
            cs_mm=acq.getSphericalAberration(),
            amplitude_contrast=acq.getAmplitudeContrast(),
            pixel_size=in_set.getSamplingRate(),
            dose=self.dose.get(),
            detector=list(DETECTORS)[self.detector.get()],
        )
        return ParticleSimulationConfig(
            acquisition=acquisition,
            box=self._box(),
            count=self.count.get(),
            defocus_range_um=self._defocusRange(),
            ice_thickness=self.iceThickness.get(),
            seed=self.seed.get(),
        )

    def _restorer(self):
        from nt2c_core.settings import replace

        return replace(
            RESTORER,
            method=RESTORER_METHODS[self.method.get()],
            steps=self.steps.get(),
            refine_steps=self.refineSteps.get(),
            width=self.width.get(),
            batch_size=self.batchSize.get(),
            lr=self.learningRate.get(),
            empty_fraction=self.emptyFraction.get(),
            seed=self.seed.get(),
        )

    def _modelPath(self) -> str:
        return self._getExtraPath("restorer.pt")

    # --- steps ----------------------------------------------------------------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.simulateStep, needsGPU=False)
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def simulateStep(self):
        from nt2c_core.settings import write_settings

        config = self._simulation()
        write_settings(config, self._getExtraPath("simulation.json"))
        if self._inProcess():
            from nt2c_core.particles.simulate import simulate_particle_files

            simulate_particle_files([self._structurePath()], config, self._getExtraPath("pairs"), progress=True)
        else:  # the dedicated environment's 'nt2c simulate-particles' (on the CPU, as in-process)
            self._runNT2C(
                "simulate-particles",
                "-o",
                os.path.abspath(self._getExtraPath("pairs")),
                "--structure",
                os.path.abspath(self._structurePath()),
                "--settings",
                os.path.abspath(self._getExtraPath("simulation.json")),
                "--device",
                "cpu",
            )
        self.info(
            f"simulated {config.count} particles of {config.box} px at {config.acquisition.pixel_size} Å/px, "
            f"defocus {config.defocus_range_um[0]}-{config.defocus_range_um[1]} µm"
        )

    def trainStep(self):
        if not self._inProcess():  # the dedicated environment's 'nt2c train-restorer'
            self._runStage(
                "train-restorer",
                self._restorer(),
                os.path.abspath(self._getExtraPath("pairs")),
                "-o",
                os.path.abspath(self._modelPath()),
                "--work",
                os.path.abspath(self._getExtraPath("sr3-work")),
            )
            return
        from nt2c_core.particles.sr3 import train_restorer_files

        train_restorer_files(
            self._getExtraPath("pairs"),
            self._modelPath(),
            self._restorer(),
            work=self._getExtraPath("sr3-work"),
            device=self._device(),
            progress=True,
        )

    def createOutputStep(self):
        model = self._modelFromFile(self._modelPath())
        self._defineOutputs(**{OUTPUT_MODEL: model})
        self._defineSourceRelation(self.inputSet, model)

    # --- info -----------------------------------------------------------------------------
    def _validate(self):
        from nt2c_core.errors import NT2CError

        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        in_set = self.inputSet.get()
        if in_set is None:
            return errors + ["Choose the particles (or micrographs) the restorer is for."]
        acq = in_set.getAcquisition()
        if acq is None or acq.getVoltage() is None:
            errors.append("The input set has no acquisition (voltage, Cs, amplitude contrast).")
            return errors
        errors += self._validateStructure()
        if not self._box():
            errors.append("Box size: give the box (px) when training from micrographs.")
            return errors
        try:
            self._simulation().validate()
            self._restorer().validate()
        except NT2CError as exc:
            errors.append(str(exc))
        return errors

    def _summary(self):
        model = getattr(self, OUTPUT_MODEL, None)
        if model is None:
            return ["Running or not started."]
        meta = model.getMetadata()
        method, where = meta.get("method", "SR3"), model.getFileName()
        lines = [f"{method} restorer for {meta.get('pixel_size')} Å/px, box {meta.get('box')} px: {where}"]
        try:
            sim = json.load(open(self._getExtraPath("simulation.json")))
            lines.append(
                f"Simulated {sim['count']} particles, defocus {sim['defocus_range_um'][0]}-"
                f"{sim['defocus_range_um'][1]} µm, dose {sim['acquisition']['dose']} e/Å²"
            )
        except (OSError, ValueError, KeyError):
            pass
        return lines

    def _methods(self):
        return [
            "An SR3 particle restorer [Zhang2024SR3] was trained on particle images simulated from the atomic "
            f"model with the data set's acquisition ({self.steps.get()} diffusion and {self.refineSteps.get()} "
            "post-processing steps), as implemented in scipion-em-nt2c."
        ]

    def _citations(self):
        return ["Zhang2024SR3"]
