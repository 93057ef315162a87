"""Messages and progress for people at a terminal and for Scipion run logs.

Every module logs through ``logging.getLogger(__name__)`` under the package logger ``nt2c_core``,
which writes plain lines (the message only) to the *current* ``sys.stdout`` at INFO by default:
the ``nt2c`` command line, a Python session and a Scipion step (whose stdout is the run log) all
see them without any set-up. :func:`configure` is the command line's ``--quiet``, ``--verbose``
and ``--log-file``.

:func:`progress` is a progress bar (tqdm) on a terminal and, when the output is not a terminal
(a Scipion log, a queue's output file, a pipe), plain periodic lines instead of tqdm's
carriage-return redraws (which a log file shows as one huge line)::

    train: 200/800 (25%), 3.1 it/s, ETA 3m14s, loss=0.0420
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

PACKAGE = "nt2c_core"
PLAIN_EVERY_S = 30.0  # at most one plain progress line per this many seconds (plus every 10 %)


class OutputFault(OSError):
    """A message could not be written (a full device, a closed or broken stream): raised instead of
    logging's "--- Logging error ---" traceback, so the command ends with one clear line."""

    def __init__(self, target: str, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), target)
        self.target = target


def _raise_fault(target: str) -> None:
    cause = sys.exc_info()[1]
    if isinstance(cause, BrokenPipeError) or not isinstance(cause, OSError):
        raise cause  # a reader that stopped (| head): the command line ends quietly
    raise OutputFault(target, cause) from cause


class _CurrentStdout(logging.StreamHandler):
    """A stream handler that always writes to the current ``sys.stdout`` (which tests, Scipion
    and ``contextlib.redirect_stdout`` replace); nothing when there is no stdout (``>&-``)."""

    def __init__(self):
        super().__init__(sys.stdout)

    def emit(self, record):
        if sys.stdout is not None:
            super().emit(record)

    def handleError(self, record):
        _raise_fault("standard output")

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # set by StreamHandler.__init__; ignored
        pass


def _package_logger() -> logging.Logger:
    logger = logging.getLogger(PACKAGE)
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # Scipion's root handlers would print each line twice
    return logger


_package_logger()


def configure(verbosity: int = 0, log_file: str | os.PathLike | None = None) -> None:
    """``verbosity``: -1 warnings and errors only (--quiet), 0 progress and results, 1 also debug
    details (--verbose). ``log_file``: also append every message, with a time stamp, there."""
    logger = _package_logger()
    logger.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(handler)
        handler.close()
    if log_file:
        handler = _LogFile(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        # a first line now, so a log file that cannot be written (a full device) fails before any work
        handler.emit(
            logging.makeLogRecord(
                {"msg": "nt2c " + " ".join(sys.argv[1:]), "levelname": "INFO", "levelno": logging.INFO}
            )
        )
        logger.addHandler(handler)


class _LogFile(logging.FileHandler):
    """--log-file: a write that fails is an :class:`OutputFault` naming the file."""

    def __init__(self, path):
        super().__init__(path, encoding="utf-8")
        self.target = f"--log-file {path}"

    def handleError(self, record):
        _raise_fault(self.target)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class PlainProgress:
    """The part of tqdm's interface nt2c uses, as periodic log lines."""

    def __init__(
        self,
        iterable=None,
        total: int | None = None,
        desc: str = "",
        initial: int = 0,
        unit: str = "it",
        disable: bool = False,
    ):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.disable = desc, unit, disable
        self.n, self.start_n = initial, initial
        self.postfix = ""
        self.t0 = self.last = time.perf_counter()
        self.last_decile = -1 if not self.total else 10 * initial // self.total
        self.log = logging.getLogger(PACKAGE + ".progress")

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        decile = 10 * self.n // self.total if self.total else -1
        done = self.total is not None and self.n >= self.total
        if not self.disable and (decile > self.last_decile or now - self.last >= PLAIN_EVERY_S or done):
            self.last_decile, self.last = decile, now
            self.log.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.t0
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.n}" + (f"/{self.total} ({100 * self.n // self.total}%)" if self.total else "")
        if rate > 0:
            text += f", {rate:.2f} {self.unit}/s" if rate < 10 else f", {rate:.0f} {self.unit}/s"
            if self.total:
                text += f", ETA {_duration((self.total - self.n) / rate)}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, message: str) -> None:
        logging.getLogger(PACKAGE).info(message)

    def close(self) -> None:
        pass


def progress(
    iterable=None, total: int | None = None, desc: str = "", initial: int = 0, unit: str = "it", disable: bool = False
):
    """A tqdm bar when stderr is a terminal, else :class:`PlainProgress` (see the module doc)."""
    if not disable and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit)
    return PlainProgress(iterable, total, desc, initial, unit, disable)


def describe_device(device) -> str:
    """The device a stage computes on, as its log says it: ``cpu, 2 torch threads`` or
    ``cuda:0 (NVIDIA H100 80GB HBM3), 2 torch threads`` (torch imported here, not by this module)."""
    import torch

    try:
        dev = torch.device(str(device))
    except RuntimeError:  # 'auto' before it is resolved
        return f"{device}, {torch.get_num_threads()} torch threads"
    name = str(dev)
    if dev.type == "cuda" and torch.cuda.is_available():
        name += f" ({torch.cuda.get_device_name(dev)})"
    return f"{name}, {torch.get_num_threads()} torch threads"


@contextlib.contextmanager
def stage(name: str, device=None):
    """``with stage("train-coarse", device):`` -- the lines every stage's log starts and ends with,
    the same for the command line, ``nt2c run`` and a Scipion step (in-process or isolated)::

        train-coarse: device cpu, 2 torch threads
        ... progress lines with ETA ...
        train-coarse: done in 3m12s

    A stage that fails logs no "done" line (its error is the last line)."""
    from .device import keep_freed_memory

    keep_freed_memory()
    log = logging.getLogger(PACKAGE)
    log.info(f"{name}: device {describe_device(device)}" if device is not None else f"{name}: started")
    started = time.perf_counter()
    yield
    log.info(f"{name}: done in {_duration(time.perf_counter() - started)}")


def staged(name: str, device=lambda arguments: arguments.get("device")):
    """Decorator: run the function inside :func:`stage` ``name``, on the device its ``device``
    argument names (or ``device(arguments)``, the bound arguments by name, for a stage handed a
    loaded model)."""
    import functools
    import inspect

    def wrap(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with stage(name, device(bound.arguments)):
                return func(*args, **kwargs)

        return run

    return wrap
