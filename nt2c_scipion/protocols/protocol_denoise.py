"""Denoise a SetOfMicrographs with an NT2C model, in streaming, one step per micrograph.

Outputs keep each micrograph's objId, micName, acquisition and CTF association (clone of the
input item with a new file), so coordinates picked on the denoised set resolve to the raw
micrographs by micName/objId (pick on denoised, extract on raw).
"""

import os
import threading
import time
from enum import Enum
from pathlib import Path

import pyworkflow.protocol.params as params
from pwem.objects import SetOfMicrographs
from pyworkflow.object import Set, String
from pyworkflow.protocol import STEPS_PARALLEL
from pyworkflow.protocol.constants import STATUS_NEW

from nt2c_core.settings import PIXEL_RANGE_SLACK

from ..constants import BIN_CHOICES, OUTPUT_MICROGRAPHS
from .protocol_base import ProtNT2CBase


def output_name(obj_id: int, file_name: str) -> str:
    """``<objId>_<stem>.mrc``: micrographs of the same name from different folders never collide
    (the micName, kept on the output item, still links it to its raw micrograph)."""
    return f"{int(obj_id):06d}_{Path(file_name).stem}.mrc"


TILE_MARGIN = 128  # px of context each tile borrows from its neighbours


class DenoiseOutputs(Enum):
    outputMicrographs = SetOfMicrographs


class ProtNT2CDenoise(ProtNT2CBase):
    """Denoise micrographs with a trained NT2C model (GPU when available, CPU otherwise). Works in
    streaming: micrographs are denoised while an upstream import or motion correction still
    produces them, and the output closes when the input closes. Use the denoised set to pick with
    a picker suited to denoised images (LoG/DoG, template, or one trained on denoised data) and
    extract the particles from the raw micrographs."""

    _label = "denoise micrographs"
    _possibleOutputs = DenoiseOutputs
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._denoisers = {}
        self._denoiserLock = threading.Lock()

    # --- form -----------------------------------------------------------------------------
    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "inputMicrographs",
            params.PointerParam,
            pointerClass="SetOfMicrographs",
            important=True,
            label="Micrographs",
            help="Motion-corrected micrographs (any size); streaming input is fine.",
        )
        form.addParam(
            "useGeneralModel",
            params.BooleanParam,
            default=True,
            label="Use the shipped general model?",
            help="Yes (default): a denoiser trained on simulation across acquisitions (pixel sizes "
            "0.6-2 Å, doses 20-60 e/Å², three detectors), shipped with the plugin: no training "
            "needed. No: a model trained on your data with the NT2C protocols, which does better.",
        )
        form.addParam(
            "inputModel",
            params.PointerParam,
            pointerClass="NT2CModel",
            important=True,
            condition="not useGeneralModel",
            allowsNull=True,
            label="NT2C denoising model",
            help="From 'import model' or an NT2C training protocol, ideally trained at the "
            "micrographs' pixel size (Å/px).",
        )
        form.addParam(
            "binning",
            params.EnumParam,
            choices=BIN_CHOICES,
            default=0,
            label="Output binning",
            help="Average-pool the denoised micrographs (1, 2 or 4) for faster picking. Their "
            "sampling rate is multiplied by the factor; coordinates picked on them must be "
            "scaled back (x_full = bin * x + (bin - 1) / 2) before extracting from the raw "
            "micrographs, e.g. with the extraction protocol's rescaling option.",
        )
        form.addParam(
            "tileSize",
            params.IntParam,
            default=1024,
            expertLevel=params.LEVEL_ADVANCED,
            label="Tile size (px)",
            help="Micrographs are denoised in overlapping tiles of this "
            "size (a multiple of 32); smaller uses less memory.",
        )
        self._defineGpuParams(form)
        # 2 Scipion threads: the main thread (which also looks for new input) and one denoising worker
        self._defineThreadParams(form, threads=2)
        form.addSection("Streaming")
        form.addParam(
            "streamingSleepOnWait",
            params.IntParam,
            default=10,
            label="Check for new input every (s)",
            help="While the input set is still open (streaming), look for new micrographs this often.",
        )

    # --- steps ----------------------------------------------------------------------------
    # Streaming the classic pwem way: the main thread's _stepsCheck adds a step per new input
    # micrograph while a waiting closeStep keeps the run alive, and releases closeStep when the input
    # closes. No thread is held by a step generator, so 2 Scipion threads (main + one worker) stream
    # and fit a 2-CPU node, and 1 thread runs the same steps one after another.
    def _insertAllSteps(self):
        self._stepsCheckSecs = max(1, self.streamingSleepOnWait.get())
        self._inserted = self._doneIds()
        ids = self._insertNewSteps()
        self._insertFunctionStep(self.closeStep, prerequisites=ids, wait=not self._inputClosed, needsGPU=False)

    def _insertNewSteps(self) -> list:
        """One denoising step per input micrograph not inserted yet; notes whether the input closed."""
        in_set = self._reloadInput()
        self._inputClosed = not in_set.isStreamOpen()
        new = [(m.getObjId(), m.getFileName()) for m in in_set.iterItems() if m.getObjId() not in self._inserted]
        in_set.close()
        self._inserted.update(obj_id for obj_id, _ in new)
        return [
            self._insertFunctionStep(self.denoiseStep, obj_id, file_name, prerequisites=[]) for obj_id, file_name in new
        ]

    def _stepsCheck(self):
        close = next((s for s in self._steps if s.funcName == "closeStep"), None)
        if close is None or not close.isWaiting():
            return
        stamp = os.stat(self.inputMicrographs.get().getFileName()).st_mtime_ns
        if stamp == getattr(self, "_inputStamp", None):
            return  # the input set's sqlite is unchanged since the last look: nothing new to read
        self._inputStamp = stamp
        ids = self._insertNewSteps()
        if ids:
            close.addPrerequisites(*ids)
        if self._inputClosed:
            close.setStatus(STATUS_NEW)
        if ids or self._inputClosed:
            self.updateSteps()

    def denoiseStep(self, obj_id, file_name):
        """Denoise one micrograph; a bad one is logged by name and skipped, the others go on."""
        from nt2c_core.errors import NT2CError

        factor = self._binFactor()
        out = self._getExtraPath(output_name(obj_id, file_name))
        try:
            if self._inProcess():
                self._denoiseHere(file_name, out, factor, obj_id)
            else:
                start = time.time()
                self._denoiseIsolated(file_name, out, factor)
                self._logDone(obj_id, file_name, time.time() - start)
        except (NT2CError, OSError) as exc:  # a bad or unreadable micrograph: named, the others go on
            self._recordFailure(obj_id, file_name, exc)
            return
        except Exception as exc:  # isolated: nt2c exited non-zero (exit 2 = bad input; its log is above)
            if self._inProcess():
                raise
            self._recordFailure(obj_id, file_name, exc)
            return
        with self._lock:
            self._appendOutput(obj_id, out, factor)

    def _denoiseHere(self, file_name, out, factor, obj_id):
        from nt2c_core.denoise import denoise_file

        denoiser = self._denoiser()
        start = time.time()
        _, warning = denoise_file(denoiser, file_name, out, factor)
        if warning:
            self.info(f"Micrograph {obj_id} ({file_name}): {warning}")
        self._logDone(obj_id, file_name, time.time() - start)

    def _logDone(self, obj_id, file_name, seconds):
        """One line per micrograph: which, how long, how many so far (no carriage returns)."""
        with self._lock:
            self._finished = getattr(self, "_finished", 0) + 1
            count = self._finished
        self.info(
            f"NT2C denoise: micrograph {obj_id} ({os.path.basename(file_name)}) denoised in {seconds:.1f} s "
            f"({count} this run)"
        )

    def _denoiseIsolated(self, file_name, out, factor):
        """The same stage through the dedicated environment's ``nt2c denoise``, which names its
        output after its input: a link named like the output stands for the micrograph."""
        link = self._getTmpPath(os.path.basename(out))
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.abspath(file_name), link)
        model = [] if self.useGeneralModel.get() else ["--model", os.path.abspath(self._modelPath())]
        self._runNT2C(
            "denoise",
            *model,
            "--bin",
            factor,
            "--tile",
            self.tileSize.get(),
            "--margin",
            TILE_MARGIN,
            "--device",
            self._cliDevice(),
            "--overwrite",
            "-o",
            os.path.dirname(os.path.abspath(out)),
            link,
        )
        if not os.path.isfile(out):
            raise RuntimeError(f"nt2c denoise wrote no {out}")

    def _recordFailure(self, obj_id, file_name, exc):
        self.error(f"Micrograph {obj_id} ({file_name}) not denoised: {exc}")
        with self._lock:
            with open(self._getExtraPath("failed.txt"), "a") as fh:
                fh.write(f"{obj_id}\t{file_name}\t{exc}\n")

    def closeStep(self):
        with self._lock:
            out_set = getattr(self, OUTPUT_MICROGRAPHS, None)
            if out_set is None:
                raise Exception("No micrograph could be denoised; see the errors above in the run log.")
            self._updateOutputSet(OUTPUT_MICROGRAPHS, out_set, Set.STREAM_CLOSED)
        failed = len(self._failures())
        self.info(
            f"NT2C denoise: output {OUTPUT_MICROGRAPHS}: {out_set}" + (f"; {failed} not denoised" if failed else "")
        )

    # --- helpers --------------------------------------------------------------------------
    def _binFactor(self) -> int:
        return int(BIN_CHOICES[self.binning.get()])

    def _reloadInput(self) -> SetOfMicrographs:
        in_set = SetOfMicrographs(filename=self.inputMicrographs.get().getFileName())
        in_set.loadAllProperties()
        return in_set

    def _doneIds(self) -> set:
        out_set = getattr(self, OUTPUT_MICROGRAPHS, None)
        return set(out_set.getIdSet()) if out_set is not None else set()

    def _denoiser(self):
        from nt2c_core.denoise import Denoiser, TileSettings

        device = self._device()
        with self._denoiserLock:
            if device not in self._denoisers:
                import torch

                tiles = TileSettings(tile=self.tileSize.get(), margin=TILE_MARGIN, batch=1)
                self._denoisers[device] = Denoiser.from_file(self._modelPath(), device, tiles)
                gpu = f" ({torch.cuda.get_device_name(torch.device(device))})" if device.startswith("cuda") else ""
                self.info(
                    f"NT2C denoise: {self._modelText()}; device {device}{gpu}; torch threads "
                    f"{torch.get_num_threads()} per step, {max(1, self.numberOfThreads.get() - 1)} step(s) at "
                    f"once; tiles {tiles.tile} px"
                )
            return self._denoisers[device]

    def _modelPath(self) -> str:
        if self.useGeneralModel.get():
            from nt2c_core.data import GENERAL_MODEL

            return str(GENERAL_MODEL)
        return self.inputModel.get().getFileName()

    def _appendOutput(self, obj_id, path, factor):
        in_set = self._reloadInput()
        mic = in_set[obj_id].clone()
        in_set.close()
        mic.setFileName(path)
        if factor > 1:
            mic.setSamplingRate(mic.getSamplingRate() * factor)
        out_set = getattr(self, OUTPUT_MICROGRAPHS, None)
        if out_set is None:
            out_set = self._createSetOfMicrographs()
            out_set.copyInfo(self.inputMicrographs.get())
            out_set.setSamplingRate(self.inputMicrographs.get().getSamplingRate() * factor)
        else:
            out_set.enableAppend()
        out_set.append(mic)
        first = not self.hasAttribute(OUTPUT_MICROGRAPHS)
        self._updateOutputSet(OUTPUT_MICROGRAPHS, out_set, Set.STREAM_OPEN)
        if first:
            self._defineSourceRelation(self.inputMicrographs, out_set)
            self.denoisingModel = String(self._modelText())  # named in the summary and kept with the run
            self._store(self.denoisingModel)

    def _modelText(self) -> str:
        """The model used, for the summary and the run: which one, its file and its weight hash."""
        from nt2c_core.io import file_digest

        path = self._modelPath()
        try:
            digest = f", file sha256 {file_digest(path)}"
        except OSError:
            digest = " (missing)"
        which = "shipped general model" if self.useGeneralModel.get() else "model"
        return f"{which} {path}{digest}"

    def _failures(self) -> list:
        path = self._getExtraPath("failed.txt")
        if not os.path.exists(path):
            return []
        return [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]

    # --- info -----------------------------------------------------------------------------
    def _validate(self):
        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        in_set = self.inputMicrographs.get()
        general = self.useGeneralModel.get()
        model = None if general else self.inputModel.get()
        if in_set is None or (model is None and not general):
            return errors + ["Choose the input micrographs and an NT2C model (or the shipped general model)."]
        acq = in_set.getAcquisition()
        if acq is None or acq.getVoltage() is None:
            errors.append(
                "The input micrographs have no acquisition (voltage, Cs, amplitude contrast): "
                "import them with their acquisition parameters."
            )
        tile = self.tileSize.get()
        if tile is None or tile % 32 or tile <= 2 * TILE_MARGIN:
            errors.append(
                f"Tile size {tile}: give a multiple of 32 larger than {2 * TILE_MARGIN} px "
                f"(tiles overlap by {TILE_MARGIN} px on each side)."
            )
        if not in_set.isStreamOpen() and in_set.getSize() == 0:
            errors.append("The input set of micrographs is empty.")
        path = self._modelPath()
        if not path or not os.path.exists(path):
            errors.append(
                f"The model file {path} is missing: "
                + ("reinstall the plugin." if general else "import the model again.")
            )
        elif model is not None and model.getKind() not in (None, "denoiser"):
            errors.append(f"{path} is a {model.getKind()!r} model, not a denoiser.")
        return errors

    def _warnings(self):
        in_set, model = self.inputMicrographs.get(), self.inputModel.get()
        if self.useGeneralModel.get() or in_set is None or model is None or not model.getPixelSize():
            return []
        ratio = in_set.getSamplingRate() / model.getPixelSize()
        if not PIXEL_RANGE_SLACK[0] <= ratio <= PIXEL_RANGE_SLACK[1]:
            return [
                f"The model was trained at {model.getPixelSize():.3f} Å/px but the micrographs are "
                f"{in_set.getSamplingRate():.3f} Å/px: results may be poor."
            ]
        return []

    def _summary(self):
        out_set = getattr(self, OUTPUT_MICROGRAPHS, None)
        lines = [
            f"Denoised {out_set.getSize() if out_set is not None else 0} micrographs (binning x{self._binFactor()})."
        ]
        # the run stores the model with its hash; before it, the path only (no hashing on every GUI refresh)
        used = getattr(self, "denoisingModel", None)
        lines.append(f"Model: {used.get() if used is not None and used.get() else self._modelPath()}.")
        lines += [f"Not denoised: micrograph {i} ({f}): {why}" for i, f, why in self._failures()]
        return lines

    def _methods(self):
        if self.useGeneralModel.get():
            return [
                "Micrographs were denoised with the general NT2C model shipped with scipion-em-nt2c "
                "[Li2022NT2C] (trained on simulation only, after SaID [Yang2024SaID])."
            ]
        model = self.inputModel.get()
        return [f"Micrographs were denoised with NT2C [Li2022NT2C] using {model}."] if model else []

    def _citations(self):
        return ["Li2022NT2C", "Yang2024SaID"] if self.useGeneralModel.get() else ["Li2022NT2C"]
