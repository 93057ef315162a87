"""Checks shared by the settings dataclasses, so a bad value is reported before hours of work.

A setting is named the way the user gave it: ``--val-fraction`` on the command line (``section``
None) and ``fine.val_fraction`` in an ``nt2c run`` config (``section`` "fine").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from .errors import InputError


def setting_name(name: str, section: str | None) -> str:
    """``--name-with-dashes`` (command line) or ``section.name`` (config file; '' = top level)."""
    if section is None:
        return "--" + name.replace("_", "-")
    return f"{section}.{name}" if section else name


def check_types(obj, section: str | None = None) -> None:
    """Every field of the dataclass ``obj`` holds the type of its default (an int where an int
    belongs, not "500"; a float may be given as an int; a field whose default is None may be
    None or an int). Fields with other defaults (tuples, nested settings) are checked by their
    owners."""
    for f in dataclasses.fields(obj):
        default = f.default if f.default is not dataclasses.MISSING else None
        value = getattr(obj, f.name)
        expected = _expected(default, str(f.type))
        if expected is None or (value is None and default is None):
            continue
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if isinstance(value, float) and float in expected and not math.isfinite(value):
            ok = False
        if not ok:
            kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}[expected[-1]]
            raise InputError(f"{setting_name(f.name, section)} = {value!r}: must be {kind}")


def _expected(default, annotation: str) -> tuple | None:
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return (int, float)
    if isinstance(default, str):
        return (str,)
    if default is None and annotation.replace(" ", "") in ("int|None", "Optional[int]"):
        return (int,)
    return None


def require(condition: bool, name: str, section: str | None, value, rule: str) -> None:
    """Raise ``InputError("NAME = VALUE: RULE")`` unless ``condition``."""
    if not condition:
        raise InputError(f"{setting_name(name, section)} = {value!r}: {rule}")


def check_rules(obj, section: str | None, rules: dict[str, tuple[Callable, str]]) -> None:
    """Apply ``{field: (predicate(value) -> bool, rule text)}`` to ``obj``'s fields."""
    for name, (predicate, rule) in rules.items():
        value = getattr(obj, name)
        require(predicate(value), name, section, value, rule)


def positive(value) -> bool:
    return value > 0


def at_least_one(value) -> bool:
    return value >= 1
