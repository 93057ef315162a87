"""Shared base of NT2C protocols: GPU parameters and the device each step runs on."""

import json
import os
import shlex
from pathlib import Path

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow import BETA

from nt2c_core.device import choose_device, cpu_threads
from nt2c_core.settings import DETECTORS

from .. import Plugin
from ..constants import NT2C_DEVICE_VAR
from ..objects import NT2CModel


class ProtNT2CBase(EMProtocol):
    """Holds the GPU form fields (hidden, Scipion's convention) and resolves the torch device:
    the GPU id Scipion's executor gives the step when GPUs are used and CUDA is present, else CPU."""

    _label = None
    _devStatus = BETA  # shown as such in Scipion's menus until facilities have run it in production

    def _defineGpuParams(self, form):
        form.addHidden(
            params.USE_GPU,
            params.BooleanParam,
            default=True,
            label="Use GPU",
            help="Run on a GPU when CUDA is available (CPU otherwise).",
        )
        form.addHidden(
            params.GPU_LIST,
            params.StringParam,
            default="0",
            label="GPU IDs",
            help="GPU ids for this protocol, e.g. 0 or 0 1.",
        )

    def _defineOutputs(self, **outputs):
        """Scipion's _defineOutputs, plus the run log's result line for each output."""
        super()._defineOutputs(**outputs)
        for name, value in outputs.items():
            self.info(f"NT2C {self.getClassLabel()}: output {name}: {value}")

    def _defineThreadParams(self, form, threads: int = 2):
        """The parallel section. Steps run one after another (training, simulation): 'Threads' are
        the torch CPU threads, also what a queue is asked for (2 fits a 2-CPU node; give the node's
        cores for CPU training). Steps in parallel (denoising, restoring): 'Scipion threads' run
        steps at once (one of them the main thread), and 'Torch threads per step' (0: the run's CPUs
        shared among the steps)."""
        form.addParallelSection(threads=threads, mpi=0)
        if self.modeParallel():
            form.addParam(
                params.BIN_THREADS_PARAM,
                params.IntParam,
                default=0,
                label="Torch threads per step",
                help="CPU threads of each step's torch computation. 0 (default): the CPUs the run "
                "may use (its affinity, or SLURM_CPUS_PER_TASK) divided among the steps "
                "running at once (Scipion threads - 1).",
            )

    def _torchThreads(self) -> int:
        """Torch CPU threads of one step (see :meth:`_defineThreadParams`)."""
        threads = max(1, self.numberOfThreads.get() or 1)
        if self.modeSerial():
            return threads
        return cpu_threads(self.getAttributeValue(params.BIN_THREADS_PARAM, 0) or 0, max(1, threads - 1))

    def _applyTorchThreads(self) -> int:
        """In-process route: set torch's CPU threads for this step; returns the count."""
        import torch

        threads = self._torchThreads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    def _validateThreadParams(self) -> list:
        if (self.numberOfThreads.get() or 0) < 1:
            return ["Threads: give 1 or more."]
        if self.modeParallel() and (self.getAttributeValue(params.BIN_THREADS_PARAM, 0) or 0) < 0:
            return ["Torch threads per step: give 0 (automatic) or more."]
        return []

    def _stepGpus(self):
        """GPUs Scipion's executor booked for the calling step: in parallel mode the
        ThreadStepExecutor books a GPU slot per step thread (from the GPU list and the thread
        count); None with one thread or outside an executor (the protocol's own list is used)."""
        try:
            return self.getExecutor().getGpuList()
        except AttributeError:  # no executor, or called outside a step thread
            return None

    def _device(self) -> str:
        """The torch device of the calling step (in-process route); also sets the step's torch CPU
        threads (:meth:`_torchThreads`)."""
        import torch

        self._applyTorchThreads()
        return choose_device(
            self.usesGpu(),
            torch.cuda.is_available(),
            self._stepGpus(),
            self.getGpuList(),
            os.environ.get(NT2C_DEVICE_VAR, "auto"),
        )

    def _cliDevice(self) -> str:
        """The ``--device`` of an ``nt2c`` call on the isolated route, where this Python cannot see
        CUDA: 'cpu', or 'auto:N' (the step's GPU N if the dedicated environment has CUDA, else CPU)."""
        device = choose_device(
            self.usesGpu(), True, self._stepGpus(), self.getGpuList(), os.environ.get(NT2C_DEVICE_VAR, "auto")
        )
        return "cpu" if device == "cpu" else "auto:" + (device.partition(":")[2] or "0")

    def _inProcess(self) -> bool:
        """True: call nt2c_core here; False: run the dedicated environment's ``nt2c`` (isolated)."""
        return Plugin.coreInProcess()

    def _runNT2C(self, command: str, *args):
        """Run ``nt2c COMMAND ARGS`` of the dedicated environment as a Scipion job: its output goes
        to the run's log, and a non-zero exit (bad input: 2) raises."""
        arguments = " ".join([command] + [shlex.quote(str(a)) for a in args])
        env = Plugin.getEnviron()
        env["OMP_NUM_THREADS"] = str(self._torchThreads())  # torch's CPU threads in that process
        self.runJob(Plugin.getProgram(), arguments, env=env)

    def _runStage(self, command: str, settings, *args, device: bool = True):
        """Isolated route of a stage: ``nt2c COMMAND ARGS --settings JSON [--device D]``, the
        stage's settings (the ``nt2c_core.settings`` object the in-process route passes to the
        stage's function) written to ``extra/COMMAND.settings.json``."""
        from nt2c_core.settings import write_settings

        path = write_settings(settings, os.path.abspath(self._getExtraPath(f"{command}.settings.json")))
        self._runNT2C(command, *args, "--settings", path, *(("--device", self._cliDevice()) if device else ()))

    def _modelFromFile(self, path) -> NT2CModel:
        """The NT2CModel of a model file this run wrote, its metadata read here (in-process) or by
        the dedicated environment's ``nt2c model-info`` (isolated route, no torch here)."""
        if self._inProcess():
            return NT2CModel.fromFile(path)
        model = NT2CModel(filename=str(path))
        model.setMetadata(self._modelInfo(path))
        return model

    def _modelInfo(self, path) -> dict:
        """A model file's metadata, checked by the dedicated environment's ``nt2c model-info``
        (isolated route) and kept in ``extra/<stem>.metadata.json``."""
        info = os.path.abspath(self._getExtraPath(Path(path).stem + ".metadata.json"))
        self._runNT2C("model-info", os.path.abspath(path), "--json", info)
        return json.loads(Path(info).read_text())

    def _validateRoute(self) -> list:
        """Errors when the computation cannot run: nt2c_core must import here (in-process route), or
        the dedicated environment must exist (isolated route: every step runs its ``nt2c``)."""
        return Plugin.validateCore()

    def _validateGpuList(self) -> list:
        gpus = self.getAttributeValue(params.GPU_LIST, "0")
        try:
            [int(g) for g in str(gpus).replace(",", " ").split()]
        except ValueError:
            return [f"GPU IDs '{gpus}': give integers separated by spaces, e.g. 0 1"]
        return []


DETECTOR_CHOICES = list(DETECTORS)


class ProtNT2CSimulationBase(ProtNT2CBase):
    """Form fields and helpers shared by the protocols that simulate training pairs: the atomic
    model (project AtomStruct or file), the experimental micrographs whose acquisition the
    simulation copies, an optional CTF estimation for the defocus range, dose and detector."""

    def _defineStructureParams(self, form):
        """The atomic model: an AtomStruct of the project or a PDB/mmCIF file."""
        form.addParam(
            "structureSource",
            params.EnumParam,
            choices=["from project", "file"],
            default=1,
            display=params.EnumParam.DISPLAY_HLIST,
            label="Atomic model",
            help="The sample's atomic model (PDB/mmCIF), used to simulate training data.",
        )
        form.addParam(
            "inputStructure",
            params.PointerParam,
            pointerClass="AtomStruct",
            allowsNull=True,
            condition="structureSource == 0",
            label="Atomic structure",
            help="The specimen's atomic model (imported into the project), simulated with the data's acquisition.",
        )
        form.addParam(
            "structureFile",
            params.PathParam,
            condition="structureSource == 1",
            label="PDB/mmCIF file",
            help="Plain or gzipped PDB or mmCIF.",
        )

    def _defineSimulationInputParams(self, form):
        self._defineStructureParams(form)
        form.addParam(
            "inputCTF",
            params.PointerParam,
            pointerClass="SetOfCTF",
            allowsNull=True,
            label="CTF estimation (optional)",
            help="If given, simulated defocus spans the estimated range; else the range below.",
        )
        line = form.addLine("Defocus range (µm)", help="Underfocus positive; used without a CTF estimation.")
        line.addParam(
            "defocusMin",
            params.FloatParam,
            default=1.0,
            label="min",
            help="Smallest defocus simulated [µm, underfocus positive].",
        )
        line.addParam(
            "defocusMax",
            params.FloatParam,
            default=3.0,
            label="max",
            help="Largest defocus simulated [µm]; each micrograph draws one in [min, max].",
        )
        form.addParam(
            "dose",
            params.FloatParam,
            default=40.0,
            label="Total dose (e/Å²)",
            help="Total exposure of each micrograph.",
        )
        form.addParam(
            "detector",
            params.EnumParam,
            choices=DETECTOR_CHOICES,
            default=0,
            label="Detector",
            help="Detector model for the simulation's MTF/DQE.",
        )
        form.addParam(
            "calibrate",
            params.BooleanParam,
            default=False,
            label="Calibrate simulation to the micrographs?",
            help="Estimate defocus range, astigmatism, dose and ice thickness from the micrographs' "
            "power spectra (up to 8 of them) and simulate with those (SaID). What cannot be "
            "estimated (no Thon rings, a dose that does not fit the detector model) keeps the "
            "values above; the log and calibration/calibration.json say which. Needs "
            "micrographs in detector counts (not normalized).",
        )

    def _defineCarbonParam(self, form, label="Simulated near a carbon edge (fraction)"):
        from nt2c_core.settings import TRAINING_SIMULATION

        form.addParam(
            "carbonFraction",
            params.FloatParam,
            default=TRAINING_SIMULATION.carbon_fraction,
            expertLevel=params.LEVEL_ADVANCED,
            label=label,
            help="Fraction of the simulated micrographs taken near the rim of a hole in a carbon film "
            "(a darker film with a Fresnel fringe along its edge), so the models learn to denoise "
            "a film and keep its edge. 0 = none (the paper's simulation).",
        )

    def _trainingSimulation(self, size: int, count: int, **values):
        """The training simulation of this form (nt2c_core.settings.TRAINING_SIMULATION with the
        data's acquisition and the form's values): one function for the one-click and the
        stage-by-stage protocols, so both routes simulate, and train on, the same pairs."""
        from nt2c_core.settings import TRAINING_SIMULATION, replace

        return replace(
            TRAINING_SIMULATION,
            acquisition=self._acquisition(),
            size=(size, size),
            particles=self.particles.get(),
            defocus_um=self._defocusRange(),
            count=count,
            seed=self.seed.get(),
            carbon_fraction=self.carbonFraction.get(),
            ice_gradient=self.iceGradient.get(),
            **values,
        )

    def _structurePath(self):
        if self.structureSource.get() == 0:
            struct = self.inputStructure.get()
            return struct.getFileName() if struct is not None else None
        return self.structureFile.get()

    def _validateStructure(self) -> list:
        path = self._structurePath()
        if not path or not os.path.isfile(path):
            return [f"Atomic model file {path!r} not found: choose a PDB/mmCIF file or an atomic structure."]
        if not _looks_like_structure(path):
            return [f"{path} is not a PDB/mmCIF atomic model."]
        return []

    def _defocusRange(self) -> tuple:
        ctfs = self.inputCTF.get() if self.inputCTF.hasValue() else None
        if ctfs is None or ctfs.getSize() == 0:
            return self.defocusMin.get(), self.defocusMax.get()
        values = [d / 1e4 for ctf in ctfs for d in (ctf.getDefocusU(), ctf.getDefocusV())]
        return round(min(values), 3), round(max(values), 3)

    def _acquisition(self):
        """nt2c_core Acquisition from the input micrographs (kV, Cs, amplitude contrast, Å/px) and
        the form (dose, detector)."""
        from nt2c_core.acquisition import Acquisition

        in_set = self.inputMicrographs.get()
        acq = in_set.getAcquisition()
        return Acquisition(
            voltage_kv=acq.getVoltage(),
            cs_mm=acq.getSphericalAberration(),
            amplitude_contrast=acq.getAmplitudeContrast(),
            pixel_size=in_set.getSamplingRate(),
            dose=self.dose.get(),
            detector=DETECTOR_CHOICES[self.detector.get()],
        )

    def _validateSimulationInputs(self) -> list:
        errors = []
        acq = self.inputMicrographs.get().getAcquisition()
        if acq is None or acq.getVoltage() is None:
            errors.append(
                "The micrographs have no acquisition (voltage, Cs, amplitude contrast): "
                "import them with their acquisition parameters."
            )
        errors += self._validateStructure()
        if self.defocusMin.get() > self.defocusMax.get():
            errors.append("Defocus range: min is larger than max.")
        return errors


def _looks_like_structure(path) -> bool:
    """Whether ``path`` reads as an atomic model: parsed by nt2c_core (gemmi) when the core imports
    here, else (isolated route) a PDB/mmCIF with atom records (the environment parses it)."""
    if not Plugin.coreInProcess():
        import gzip

        opener = gzip.open if str(path).endswith(".gz") else open
        try:
            with opener(path, "rt", errors="replace") as fh:
                head = fh.read(1 << 20)
        except OSError:
            return False
        return any(key in head for key in ("\nATOM  ", "\nHETATM", "_atom_site.")) or head.startswith(
            ("ATOM  ", "HETATM")
        )
    from nt2c_core.errors import NT2CError
    from nt2c_core.simulate.structure import load_structure

    try:
        load_structure(path)
    except (NT2CError, ValueError, RuntimeError):
        return False
    return True
