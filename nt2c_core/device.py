"""Which torch device a run uses: one place for the CLI, the pipeline and the Scipion protocols."""

from __future__ import annotations

from .errors import InputError

DEVICE_CHOICES = "cpu, cuda, cuda:N, auto or auto:N"


def check_device_name(device: str) -> str:
    """``device`` if it names a device nt2c can be asked for (:data:`DEVICE_CHOICES`), checked
    without torch (a settings file is validated before any work; :func:`resolve_device` then
    checks that the device exists)."""
    if not isinstance(device, str):
        raise InputError(f"device {device!r}: choose {DEVICE_CHOICES}")
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda", "auto") or (colon and (kind == "cpu" or not index.isdigit())):
        raise InputError(f"device {device!r}: unknown; choose {DEVICE_CHOICES}")
    return device


def resolve_device(device: str):
    """'auto' -> CUDA when available else CPU; 'auto:N' -> cuda:N when CUDA is available else CPU
    (what a Scipion step asks for when it cannot see the GPUs itself); otherwise the named device
    (cpu, cuda, cuda:N), checked. Returns a ``torch.device``."""
    import torch

    if device == "auto" or device.startswith("auto:"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise InputError(f"device {device!r}: unknown; choose cpu, cuda, cuda:N, auto or auto:N")
        return torch.device(f"cuda:{index}" if index else "cuda")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r}: unknown; choose cpu, cuda, cuda:N, auto or auto:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r}: nt2c runs on cpu or cuda (cuda:N, or auto)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available on this machine")
    return dev


def choose_device(use_gpu: bool, cuda_available: bool, step_gpus, protocol_gpus, wanted: str = "auto") -> str:
    """The device of a Scipion step: 'cpu' unless GPUs are wanted and CUDA is present; then the
    first GPU the executor gave the step (``step_gpus``), else the first of the protocol's list,
    else the default CUDA device. ``wanted`` 'cpu' (the NT2C_DEVICE variable) forces the CPU."""
    if wanted == "cpu" or not use_gpu or not cuda_available:
        return "cpu"
    for gpus in (step_gpus, protocol_gpus):
        if gpus:
            return f"cuda:{int(gpus[0])}"
    return "cuda"


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, no more than a batch system's grant
    (``SLURM_CPUS_PER_TASK``, ``NSLOTS``) where one is set."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    for name in ("SLURM_CPUS_PER_TASK", "NSLOTS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            cpus = min(cpus, int(value))
    return max(1, cpus)


def cpu_threads(requested: int = 0, workers: int = 1) -> int:
    """Torch CPU threads for one of ``workers`` steps running at once: ``requested`` when > 0,
    else the available CPUs (:func:`available_cpus`) shared among the workers, at least 1."""
    if requested and requested > 0:
        return int(requested)
    return max(1, available_cpus() // max(1, workers))


KEEP_FREED_BYTES = 1 << 30  # glibc: blocks below this come from (and go back to) the heap, kept for reuse
_allocator_tuned = False


def _glibc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl without the names)
        return None


def keep_freed_memory() -> bool:
    """Let the process keep the memory it frees for reuse (glibc only; once per process; returns
    whether it applied). By default glibc maps every block over 32 MB afresh and unmaps it when
    freed, so each layer of a 3-D U-Net on a tomogram tile pays the kernel to zero ~100 MB again:
    on 2 CPUs that doubled NMSG's inference time (half of it system time;
    benchmarks/bench_tomo.py --speed-only). ``NT2C_KEEP_FREED_MEMORY=0`` leaves glibc's default."""
    import os

    global _allocator_tuned
    if _allocator_tuned or os.environ.get("NT2C_KEEP_FREED_MEMORY", "1") == "0":
        return _allocator_tuned
    libc = _glibc()
    if libc is None:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    _allocator_tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    )
    return _allocator_tuned


def release_freed_memory() -> None:
    """Hand the memory freed so far back to the system (glibc ``malloc_trim``): between two phases
    of a run (training, then inference) whose blocks differ in size, so that the peak resident
    memory is the larger phase's, not their sum."""
    if _allocator_tuned:
        _glibc().malloc_trim(0)
