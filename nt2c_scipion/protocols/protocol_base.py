"""Shared base of NT2C protocols: GPU parameters and the device each step runs on."""

import os

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol

from ..constants import NT2C_DEVICE_VAR


def choose_device(use_gpu: bool, cuda_available: bool, step_gpus, protocol_gpus, wanted: str = "auto") -> str:
    """'cpu' unless GPUs are wanted and CUDA is present; then the first GPU the executor gave
    the step, else the first of the protocol's list, else the default CUDA device."""
    if wanted == "cpu" or not use_gpu or not cuda_available:
        return "cpu"
    for gpus in (step_gpus, protocol_gpus):
        if gpus:
            return f"cuda:{int(gpus[0])}"
    return "cuda"


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
        """The torch device of the calling step. In parallel mode Scipion's ThreadStepExecutor
        books a GPU slot per step thread (``getExecutor().getGpuList()``, from the GPU list and the
        thread count); with one thread, or outside an executor, the protocol's own list is used."""
        import torch

        try:
            step_gpus = self.getExecutor().getGpuList()
        except AttributeError:  # no executor, or called outside a step thread
            step_gpus = None
        return choose_device(self.usesGpu(), torch.cuda.is_available(), step_gpus, self.getGpuList(),
                             os.environ.get(NT2C_DEVICE_VAR, "auto"))

    def _validateGpuList(self) -> list:
        gpus = self.getAttributeValue(params.GPU_LIST, "0")
        try:
            [int(g) for g in str(gpus).replace(",", " ").split()]
        except ValueError:
            return [f"GPU IDs '{gpus}': give integers separated by spaces, e.g. 0 1"]
        return []
