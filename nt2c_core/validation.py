"""Checks shared by the settings dataclasses, so a bad value is reported before hours of work.

A setting is named the way the user gave it: ``--val-fraction`` on the command line (``section``
None) and ``fine.val_fraction`` in an ``nt2c run`` config (``section`` "fine").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from .errors import InputError

SEED_LIMIT = 2**32  # numpy's seeds: 0 .. 2**32 - 1 (the command line and settings files alike)


def setting_name(name: str, section: str | None) -> str:
    """``--name-with-dashes`` (command line) or ``section.name`` (config file; '' = top level)."""
    if section is None:
        return "--" + name.replace("_", "-")
    return f"{section}.{name}" if section else name


def check_types(obj, section: str | None = None, deep: bool = False) -> None:
    """Every field of the dataclass ``obj`` holds the type of its default (an int where an int
    belongs, not "500"; a float may be given as an int; a field whose default is None may be
    None or an int); a seed is never negative. With ``deep`` (settings read from a file) also
    tuples (as many numbers or names as the default has) and lists of text. Nested settings are
    checked by their own call."""
    for f in dataclasses.fields(obj):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if deep and f.default_factory is not dataclasses.MISSING else None)
        )
        value = getattr(obj, f.name)
        if f.name == "seed" and isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < SEED_LIMIT:
            raise InputError(f"{setting_name(f.name, section)} = {value!r}: must be within 0..{SEED_LIMIT - 1}")
        if deep and isinstance(default, (tuple, list)) and not dataclasses.is_dataclass(default):
            _check_sequence(f.name, section, value, default)
            continue
        expected = _expected(default, str(f.type))
        if expected is None or (value is None and default is None):
            continue
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if isinstance(value, float) and float in expected and not math.isfinite(value):
            ok = False
        if not ok:
            kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}[expected[-1]]
            raise InputError(f"{setting_name(f.name, section)} = {value!r}: must be {kind}")


def _check_sequence(name: str, section: str | None, value, default) -> None:
    """A tuple setting holds as many items as its default (any count for a variable-length one,
    ``tuple[float, ...]``), each of the default items' type; a list of text holds text."""
    if not isinstance(value, (tuple, list)):
        raise InputError(f"{setting_name(name, section)} = {value!r}: must be a list")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in default)
    if (
        isinstance(default, tuple)
        and default
        and len(value) != len(default)
        and len(set(map(type, default))) == 1
        and not (len(default) > 2 and numbers)
    ):
        raise InputError(
            f"{setting_name(name, section)} = {value!r}: must be {len(default)} {'numbers' if numbers else 'items'}"
        )
    for item in value:
        if numbers and default:
            ok = isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
            kind = "numbers"
        elif default and all(isinstance(v, str) for v in default):
            ok, kind = isinstance(item, str), "text"
        else:
            ok, kind = True, ""
        if not ok:
            raise InputError(f"{setting_name(name, section)} = {value!r}: its items must be {kind}")


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
