"""Argument parsing for each ``nt2c`` subcommand (one module per stage); the work is in the library.

Each module calls :func:`register` with its ``add_arguments`` and ``run`` functions.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Callable

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

COMMANDS: dict[str, tuple[AddArguments, Run, str]] = {}
MODULES = ("calibrate", "simulate", "general", "train", "noise", "denoise", "evaluate", "run", "demo", "tomo", "particles",
           "model")


def register(name: str, help_text: str, add_arguments: AddArguments, run: Run) -> None:
    COMMANDS[name] = (add_arguments, run, help_text)


def register_all() -> dict[str, tuple[AddArguments, Run, str]]:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return COMMANDS
