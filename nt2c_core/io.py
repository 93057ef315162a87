"""Reading and writing micrographs, STAR and JSON files, with validation and atomic writes.

Every writer goes through :func:`atomic_write`: the data is written to a hidden temporary file in
the destination folder and renamed over the final name only once complete, so an interrupted run
never leaves a half-written file that looks finished. Nothing here ever writes over an input.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import mrcfile
import numpy as np

from .errors import InputError

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".st")


def _new_file_mode() -> int:
    """0666 minus the process umask (read once at import: os.umask is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


NEW_FILE_MODE = _new_file_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds,
    with the permissions a plain new file gets (0666 minus the umask: readable by the group in a
    facility), not the private 0600 of a temporary file.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"{folder}: cannot write output here ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, NEW_FILE_MODE)
        os.replace(tmp_path, path)
    except OSError as exc:  # disk full, quota, permissions: nothing half-written is left
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise InputError(f"{path}: could not be written ({exc.strerror or exc}); nothing was left behind") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and check that files can be created in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nt2c-write-test"):
            pass
    except OSError as exc:
        raise InputError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from exc
    return folder


def read_mrc(path: str | os.PathLike, allow_stack: bool = False) -> tuple[np.ndarray, float]:
    """Read one 2-D image (or a stack when ``allow_stack``) as float32 and its pixel size in Å.

    Raises :class:`InputError` naming the file when it is missing, not an MRC file, truncated,
    holds NaN/Inf pixels, or is a stack/volume where a single image is expected.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, permissive=True) as mrc:
                if mrc.data is None:
                    raise InputError(f"{path}: not a readable MRC file (bad header or truncated data)")
                data = np.asarray(mrc.data, dtype=np.float32)
                pixel = float(mrc.voxel_size.x)
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable MRC file ({exc})") from exc
    data = _check_image_shape(path, data, allow_stack)
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.isfinite(data).sum())
        raise InputError(f"{path}: {bad} pixels are NaN or Inf")
    return data, pixel


def _check_image_shape(path: Path, data: np.ndarray, allow_stack: bool) -> np.ndarray:
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        return data[None] if allow_stack else data
    if data.ndim == 3 and allow_stack:
        return data
    raise InputError(f"{path}: expected a single 2-D image, found an array of shape {data.shape}")


def write_mrc(path: str | os.PathLike, data: np.ndarray, pixel_size: float) -> Path:
    """Write ``data`` (2-D image or 3-D stack) as float32 MRC with the pixel size in Å, atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data, dtype=np.float32))
            mrc.voxel_size = float(pixel_size)
            mrc.update_header_stats()
    return path


def write_json(path: str | os.PathLike, obj: Mapping) -> Path:
    """Write a JSON document (indented, keys in insertion order) atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_star(path: str | os.PathLike, block: str, columns: Sequence[str],
               rows: Sequence[Sequence]) -> Path:
    """Write one STAR data block with a loop (RELION column names without the leading ``_``)."""
    lines = [f"data_{block}", "", "loop_"]
    lines += [f"_{name} #{i + 1}" for i, name in enumerate(columns)]
    for row in rows:
        lines.append(" ".join(_star_value(v) for v in row))
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n\n")
    return path


def _star_value(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6f}"
    text = str(value)
    return text if text and " " not in text else f'"{text}"'


def read_star(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the first loop of a STAR file into a dict column name -> array (numbers parsed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    columns: list[str] = []
    rows: list[list[str]] = []
    in_loop = False
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            if in_loop and rows:
                break
            continue
        if text == "loop_":
            in_loop = True
        elif in_loop and text.startswith("_"):
            columns.append(text.split()[0][1:])
        elif in_loop:
            rows.append(text.split())
    if not columns:
        raise InputError(f"{path}: no STAR loop found")
    return {name: _parse_column([r[i] for r in rows]) for i, name in enumerate(columns)}


def _parse_column(values: list[str]) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except ValueError:
        return np.asarray(values)


def list_mrcs(folder: str | os.PathLike) -> list[Path]:
    """Sorted MRC files of a folder."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in MRC_SUFFIXES)
