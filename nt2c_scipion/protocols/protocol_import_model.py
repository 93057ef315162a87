"""Import a trained NT2C model file, so one model trained per sample type serves many sessions."""

import shutil
import subprocess
from enum import Enum
from pathlib import Path

import pyworkflow.protocol.params as params

from .. import Plugin
from ..constants import OUTPUT_MODEL
from ..objects import NT2CModel
from .protocol_base import ProtNT2CBase


class ImportModelOutputs(Enum):
    outputModel = NT2CModel


class ProtNT2CImportModel(ProtNT2CBase):
    """Import an NT2C model (.pt written by nt2c train / train-fine / train-noise-gan). The file is
    copied into the project, checked to be an NT2C model, and its metadata shown in the summary."""

    _label = "import model"
    _possibleOutputs = ImportModelOutputs

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "modelFile",
            params.PathParam,
            label="NT2C model file",
            help="A .pt file written by 'nt2c train', 'nt2c train-fine' or the NT2C protocols. "
            "It holds weights plus metadata (architecture, pixel size, acquisition); it "
            "is never unpickled as code.",
        )

    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep)

    def importStep(self):
        source = Path(self.modelFile.get())
        if self._inProcess():
            from nt2c_core.models.store import load_model

            _, metadata = load_model(source)  # the whole check: kind, metadata, weights fit and finite
        else:  # the same check by the dedicated environment's command line
            metadata = self._modelInfo(source)
        target = Path(self._getExtraPath(source.name))
        shutil.copyfile(source, target)
        model = NT2CModel(filename=str(target))
        model.setMetadata(metadata)
        self._defineOutputs(**{OUTPUT_MODEL: model})

    def _validate(self):
        path = self.modelFile.get()
        if not path:
            return ["Give the path of an NT2C model file."]
        errors = self._validateRoute()
        if errors:
            return errors
        if not self._inProcess():
            check = subprocess.run([Plugin.getProgram(), "-q", "model-info", path], capture_output=True, text=True)
            return [check.stderr.strip().splitlines()[-1]] if check.returncode else []

        from nt2c_core.errors import NT2CError
        from nt2c_core.models.store import load_model

        try:
            load_model(path)  # weights that do not fit their architecture, or NaN weights, are refused here
        except NT2CError as exc:
            return [str(exc)]
        return []

    def _summary(self):
        model = getattr(self, OUTPUT_MODEL, None)
        if model is None:
            return ["Model not imported yet."]
        meta = model.getMetadata()
        arch = meta.get("architecture", {})
        lines = [
            f"Kind: {meta.get('kind', 'denoiser')}, architecture {arch.get('name')} width {arch.get('width')}",
            f"Trained for pixel size: {meta.get('pixel_size')} Å",
        ]
        training = meta.get("training", {})
        if training.get("val_psnr_db") is not None:
            lines.append(
                f"Validation PSNR {training['val_psnr_db']:.2f} dB (raw {training.get('raw_val_psnr_db', 0):.2f} dB)"
            )
        lines.append(f"nt2c {meta.get('nt2c_version')}, torch {meta.get('torch_version')}")
        return lines

    def _methods(self):
        model = getattr(self, OUTPUT_MODEL, None)
        return [f"An NT2C model ({model}) was imported [Li2022NT2C]."] if model else []

    def _citations(self):
        return ["Li2022NT2C"]
