"""Shared base of NT2C protocols: GPU parameters and the device each step runs on."""

import os

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol

from ..constants import NT2C_DEVICE_VAR


class ProtNT2CBase(EMProtocol):
    """Holds the GPU form fields (hidden, Scipion's convention) and resolves the torch device:
    the GPU id Scipion's executor gives the step when GPUs are used and CUDA is present, else CPU."""

    _label = None

    def _defineGpuParams(self, form):
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU", help="Run on a GPU when CUDA is available (CPU otherwise).")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                       label="GPU IDs", help="GPU ids for this protocol, e.g. 0 or 0 1.")

    def _device(self) -> str:
        import torch

        wanted = os.environ.get(NT2C_DEVICE_VAR, "auto")
        if wanted == "cpu" or not self.usesGpu() or not torch.cuda.is_available():
            return "cpu"
        gpus = self.getGpuList()
        return f"cuda:{gpus[0]}" if gpus else "cuda"

    def _validateGpuList(self) -> list:
        gpus = self.getAttributeValue(params.GPU_LIST, "0")
        try:
            [int(g) for g in str(gpus).replace(",", " ").split()]
        except ValueError:
            return [f"GPU IDs '{gpus}': give integers separated by spaces, e.g. 0 1"]
        return []
