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


def add_settings_argument(p: argparse.ArgumentParser, what: str) -> None:
    """``--settings JSON``: the stage's settings as a file (``nt2c_core.settings.write_settings``;
    what the Scipion plugin hands the command), instead of the options that set them."""
    p.add_argument("--settings", metavar="JSON",
                   help=f"{what} from a JSON file (as the Scipion plugin writes it); replaces the options that set them")


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
