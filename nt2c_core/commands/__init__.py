"""Argument parsing for each ``nt2c`` subcommand (one module per stage); the work is in the library.

Each module calls :func:`register` with its ``add_arguments`` and ``run`` functions.
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Callable

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

COMMANDS: dict[str, tuple[AddArguments, Run, str]] = {}
MODULES = (
    "calibrate",
    "simulate",
    "general",
    "train",
    "noise",
    "denoise",
    "evaluate",
    "run",
    "demo",
    "tomo",
    "particles",
    "model",
)


def add_settings_argument(p: argparse.ArgumentParser, what: str) -> None:
    """``--settings JSON``: the stage's settings as a file (``nt2c_core.settings.write_settings``;
    what the Scipion plugin hands the command), instead of the options that set them."""
    p.add_argument(
        "--settings",
        metavar="JSON",
        help=f"{what} from a JSON file (as the Scipion plugin writes it); replaces the options that set them",
    )


def settings_or_options(args: argparse.Namespace, kind, from_options: Callable):
    """The settings dataclass ``kind`` read from ``--settings`` when given, else built from the
    options by ``from_options(args)``."""
    if getattr(args, "settings", None):
        from ..settings import read_settings

        return read_settings(kind, args.settings)
    return from_options(args)


def register(name: str, help_text: str, add_arguments: AddArguments, run: Run) -> None:
    COMMANDS[name] = (add_arguments, run, help_text)


def register_all() -> dict[str, tuple[AddArguments, Run, str]]:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return COMMANDS


# Which options name files a command reads and which it writes (by argparse dest), for the check
# that no output lands on an input; one list for every command.
INPUT_OPTIONS = (
    "inputs",
    "structure",
    "pairs",
    "model",
    "noise_patches",
    "noise_model",
    "coarse",
    "calibration",
    "tomogram",
    "star",
    "config",
    "truth",
    "pred",
    "reference",
    "settings",
    "patches",
    "oversmoothed",
    "micrographs",
    "init",
    "coords",
    "consistency_reference",
)
OUTPUT_OPTIONS = ("output", "work", "save_model", "json", "export", "log_file")
_OPTION_FLAG = {
    "output": "-o",
    "log_file": "--log-file",
    "inputs": "input",
    "tomogram": "input",
    "star": "input",
    "config": "input",
    "pairs": "--pairs",
}


def _paths(value) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, (str, os.PathLike))]
    return [str(value)] if isinstance(value, (str, os.PathLike)) else []


def _same(a: str, b: str) -> bool:
    """The same file or folder: equal resolved paths (symbolic links followed) or, when both exist,
    the same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_outputs_are_not_inputs(args: argparse.Namespace) -> str | None:
    """The message when an output of the command (``-o``, ``--work``, ``--json``, ``--save-model``,
    ``--export``, ``--log-file``) is one of its inputs (symbolic and hard links included), else
    None: checked before any work, so an input is never written over."""
    inputs = [(name, p) for name in INPUT_OPTIONS for p in _paths(getattr(args, name, None))]
    for out_name in OUTPUT_OPTIONS:
        for out in _paths(getattr(args, out_name, None)):
            for in_name, path in inputs:
                if _same(out, path):
                    flag = _OPTION_FLAG.get(out_name, "--" + out_name.replace("_", "-"))
                    what = _OPTION_FLAG.get(in_name, "--" + in_name.replace("_", "-"))
                    return f"{flag} {out}: would overwrite the input ({what} {path}); choose another output path"
    return None
