"""Simulate clean/noisy training pairs of an atomic model with the experiment's acquisition."""

import os
from enum import Enum
from pathlib import Path

import pyworkflow.protocol.params as params
from pwem.objects import Micrograph, SetOfMicrographs

from ..constants import ICE_GRADIENT_HELP
from .protocol_base import ProtNT2CSimulationBase


class SimulateOutputs(Enum):
    outputNoisy = SetOfMicrographs
    outputClean = SetOfMicrographs


class ProtNT2CSimulate(ProtNT2CSimulationBase):
    """Simulate micrographs of the atomic model with the acquisition (kV, Cs, amplitude contrast,
    Å/px) of the experimental micrographs, the given dose and detector, and defocus from a CTF
    estimation or a range. Outputs noisy and clean sets paired by micName (the training pairs of
    the coarse and fine denoisers)."""

    _label = "simulate training pairs"
    _possibleOutputs = SimulateOutputs

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "inputMicrographs",
            params.PointerParam,
            pointerClass="SetOfMicrographs",
            important=True,
            label="Experimental micrographs",
            help="Their acquisition and sampling rate are simulated.",
        )
        self._defineSimulationInputParams(form)
        form.addSection("Simulation")
        form.addParam(
            "count",
            params.IntParam,
            default=64,
            label="Micrographs to simulate",
            help="Clean/noisy training pairs (10 % are held out for validation).",
        )
        form.addParam("size", params.IntParam, default=512, label="Size (px)", help="Side of each micrograph.")
        form.addParam(
            "particles",
            params.IntParam,
            default=20,
            label="Particles per micrograph",
            help="Match the crowding of the real micrographs (particles per area).",
        )
        form.addParam(
            "iceThickness",
            params.FloatParam,
            default=300.0,
            label="Ice thickness (Å)",
            help="Amorphous ice slab; its spectrum adds to the detector noise.",
        )
        self._defineCarbonParam(form)
        form.addParam(
            "iceGradient",
            params.FloatParam,
            default=0.0,
            expertLevel=params.LEVEL_ADVANCED,
            label="Ice-thickness gradient (fraction)",
            help=ICE_GRADIENT_HELP,
        )
        form.addParam(
            "seed",
            params.IntParam,
            default=0,
            expertLevel=params.LEVEL_ADVANCED,
            label="Random seed",
            help="The same seed and settings give the same micrographs.",
        )
        self._defineGpuParams(form)
        self._defineThreadParams(form)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.simulateStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _simulation(self):
        size = self.size.get()
        return self._trainingSimulation(size, self.count.get(), ice_thickness=self.iceThickness.get())

    def simulateStep(self):
        config = self._simulation()
        structure = os.path.abspath(self._structurePath())
        output = os.path.abspath(self._getExtraPath("sim"))
        if not self._inProcess():  # the dedicated environment's 'nt2c calibrate' and 'nt2c simulate'
            args = []
            if self.calibrate.get():
                folder = os.path.abspath(self._getExtraPath("calibration"))
                self._runStage(
                    "calibrate",
                    config,
                    *[os.path.abspath(m.getFileName()) for m in self.inputMicrographs.get()],
                    "-o",
                    folder,
                    "--structure",
                    structure,
                    device=False,
                )
                args = ["--calibration", os.path.join(folder, "calibration.json")]
            self._runStage("simulate", config, "-o", output, "--structure", structure, *args)
            return
        from nt2c_core.simulate import simulate_dataset

        if self.calibrate.get():
            config = self._calibrated(config)
        simulate_dataset([structure], config, output, device=self._device(), progress=True)

    def _calibrated(self, config):
        from nt2c_core.calibrate import calibrate_files

        files = [m.getFileName() for m in self.inputMicrographs.get()]
        result = calibrate_files(files, config, self._getExtraPath("calibration"), [self._structurePath()])
        for note in result.notes:
            self.info(f"calibration: {note}")
        sim = result.simulation
        self.info(
            f"calibrated: defocus {sim.defocus_um[0]:.3f}-{sim.defocus_um[1]:.3f} µm, dose "
            f"{sim.acquisition.dose:.1f} e/Å², ice {sim.ice_thickness:.0f} Å"
        )
        return sim

    def createOutputStep(self):
        sets = {}
        for kind in ("noisy", "clean"):
            out = self._createSetOfMicrographs(suffix=kind.capitalize())
            out.copyInfo(self.inputMicrographs.get())
            for path in sorted(Path(self._getExtraPath("sim", kind)).glob("*.mrc")):
                mic = Micrograph(location=str(path))
                mic.setMicName(path.name)
                out.append(mic)
            sets[f"output{kind.capitalize()}"] = out
        self._defineOutputs(**sets)
        for out in sets.values():
            self._defineSourceRelation(self.inputMicrographs, out)

    def _validate(self):
        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        if self.inputMicrographs.get() is None:
            return errors + ["Choose the experimental micrographs."]
        errors += self._validateSimulationInputs()
        if self.count.get() < 2:
            errors.append("Simulate at least 2 micrographs (training and validation).")
        if not errors:  # the settings checked as 'nt2c simulate' checks them
            from nt2c_core.errors import NT2CError

            try:
                self._simulation().validate()
            except NT2CError as exc:
                errors.append(f"Settings: {exc}")
        return errors

    def _summary(self):
        out = getattr(self, "outputNoisy", None)
        if out is None:
            return ["Not simulated yet."]
        return [
            f"{out.getSize()} clean/noisy pairs at {out.getSamplingRate():.3f} Å/px, defocus "
            f"{self._defocusRange()[0]}-{self._defocusRange()[1]} µm, dose {self.dose.get()} e/Å²."
        ]

    def _citations(self):
        return ["Li2022NT2C"]
