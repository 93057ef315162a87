"""Reading and writing micrographs, STAR and JSON files, with validation and atomic writes.

Every writer goes through :func:`atomic_write`: the data is written to a hidden temporary file in
the destination folder and renamed over the final name only once complete, so an interrupted run
never leaves a half-written file that looks finished. Nothing here ever writes over an input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import mrcfile
import numpy as np

from .errors import InputError

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".st")
TEMP_MARK = ".nt2c-"  # our temporaries are named .<final name>.nt2c-<random>.tmp
STALE_TEMP_SECONDS = 600  # older ones were left by a killed run (kill -9, power cut) and are removed
_OUR_TEMP = re.compile(r"^\..+\.nt2c-[A-Za-z0-9_]+\.tmp$")
MRC_MODE_BYTES = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}  # int8, int16, float32, uint16, float16


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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=".tmp", dir=folder)
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
    """Create ``folder`` if needed, check that files can be created in it (before any work is
    done, not after), and remove our own temporaries that a killed run left there."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: output folder is an existing file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nt2c-write-test"):
            pass
    except OSError as exc:
        raise InputError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from exc
    remove_stale_temporaries(folder)
    return folder


def remove_stale_temporaries(folder: str | os.PathLike, max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete ``.NAME.nt2c-XXXX.tmp`` files (ours, see :func:`atomic_write`) older than
    ``max_age`` seconds: a run stopped by kill -9 cannot remove them itself. Other files,
    and temporaries still being written by a live run, are left alone."""
    removed, now = [], time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if _OUR_TEMP.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > max_age:
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
    return removed


def read_mrc(path: str | os.PathLike, allow_stack: bool = False) -> tuple[np.ndarray, float]:
    """Read one 2-D image (or a stack when ``allow_stack``) as float32 and its pixel size in Å.

    Raises :class:`InputError` naming the file when it is missing, not an MRC file, truncated,
    holds NaN/Inf pixels, or is a stack/volume where a single image is expected.
    """
    path = Path(path)
    data, pixel = _read_mrc_array(path)
    data = _check_image_shape(path, data, allow_stack)
    _check_finite(path, data)
    return data, pixel


def read_mrc_volume(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a 3-D volume (z, y, x) as float32 and its voxel size in Å; InputError naming the file
    when it is missing, not an MRC file, truncated, not 3-D, or holds NaN/Inf voxels."""
    path = Path(path)
    data, voxel = _read_mrc_array(path)
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputError(f"{path}: is not a volume (shape {data.shape}); need a tomogram (z, y, x)")
    _check_finite(path, data)
    return data, voxel


def _read_mrc_array(path: Path) -> tuple[np.ndarray, float]:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    check_mrc_header(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, permissive=True) as mrc:
                if mrc.data is None:
                    raise InputError(f"{path}: not a readable MRC file (bad header or truncated data)")
                return np.asarray(mrc.data, dtype=np.float32), float(mrc.voxel_size.x)
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable MRC file ({exc})") from exc
    except MemoryError as exc:
        raise InputError(f"{path}: not enough memory to read it ({data_size_text(path)})") from exc


def _check_finite(path: Path, data: np.ndarray) -> None:
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.isfinite(data).sum())
        raise InputError(f"{path}: {bad} pixels are NaN or Inf")


def check_mrc_header(path: str | os.PathLike) -> tuple[tuple[int, int, int], int]:
    """((nz, ny, nx), mode) from the 1024-byte header, checked against the file's real size
    *before* anything is allocated: a crafted or foreign file (a huge extended-header size, a
    renamed PNG, a truncated transfer) is refused by name at once instead of making the reader
    allocate gigabytes. Complex data (modes 3, 4) is refused: a micrograph is real-valued."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size < 1024:
            raise InputError(f"{path}: not an MRC file ({size} bytes, shorter than the 1024-byte MRC header)")
        with open(path, "rb") as fh:
            raw = fh.read(1024)
    except OSError as exc:  # no read permission, a symbolic link loop, an I/O error
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    header = _parse_header(raw)
    signed = bytes(header["map"]) == b"MAP "
    nx, ny, nz, mode, extended = (int(header[k]) for k in ("nx", "ny", "nz", "mode", "nsymbt"))
    plausible = min(nx, ny, nz) > 0 and mode in (*MRC_MODE_BYTES, 3, 4, 101)
    if not signed and not plausible:
        raise InputError(f"{path}: not an MRC file (no MRC header: dimensions {nx} x {ny} x {nz}, mode {mode})")
    if min(nx, ny, nz) <= 0:
        raise InputError(f"{path}: bad MRC header: dimensions {nx} x {ny} x {nz} must be positive")
    if mode in (3, 4):
        raise InputError(f"{path}: holds complex data (MRC mode {mode}), not a real-valued image")
    if mode not in MRC_MODE_BYTES:
        raise InputError(f"{path}: unsupported MRC data mode {mode} (nt2c reads modes 0, 1, 2, 6 and 12)")
    if extended < 0 or 1024 + extended > size:
        raise InputError(
            f"{path}: bad MRC header: its extended header of {extended} bytes is larger than "
            f"the whole file ({size} bytes)"
        )
    expected = 1024 + extended + nx * ny * nz * MRC_MODE_BYTES[mode]
    if size < expected:
        raise InputError(
            f"{path}: truncated MRC file: its header announces {nx} x {ny} x {nz} values "
            f"({expected} bytes in all) but the file has {size} bytes"
        )
    return (nz, ny, nx), mode


def _parse_header(raw: bytes) -> np.ndarray:
    """The header record in the byte order its machine stamp names (little-endian when the
    stamp is unreadable and the dimensions make sense that way, as mrcfile's permissive mode)."""
    dtype = mrcfile.dtypes.HEADER_DTYPE
    little = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))[0]
    try:
        order = mrcfile.utils.byte_order_from_machine_stamp(bytes(little["machst"]))
    except ValueError:
        big = np.frombuffer(raw, dtype=dtype.newbyteorder(">"))[0]
        fits = lambda h: 0 < int(h["nx"]) < 2**20 and 0 < int(h["ny"]) < 2**20  # noqa: E731
        return big if fits(big) and not fits(little) else little
    return np.frombuffer(raw, dtype=dtype.newbyteorder(order))[0]


def data_size_text(path: Path) -> str:
    (nz, ny, nx), mode = check_mrc_header(path)
    return f"{nx} x {ny} x {nz} values, {nx * ny * nz * 4 / 2**30:.1f} GiB as float32"


def read_mrc_labels(path: str | os.PathLike) -> list[str]:
    """The text labels of an MRC header ([] when the file is not a readable MRC)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                n = min(int(mrc.header.nlabl), 10)
                return [bytes(label).decode("ascii", "replace").rstrip() for label in mrc.header.label[:n]]
    except (ValueError, OSError, EOFError):
        return []


def _check_image_shape(path: Path, data: np.ndarray, allow_stack: bool) -> np.ndarray:
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        return data[None] if allow_stack else data
    if data.ndim == 3 and allow_stack:
        return data
    raise InputError(f"{path}: expected a single 2-D image, found an array of shape {data.shape}")


def write_mrc(path: str | os.PathLike, data: np.ndarray, pixel_size: float, labels: Sequence[str] = ()) -> Path:
    """Write ``data`` (2-D image or 3-D stack) as float32 MRC with the pixel size in Å, atomically.
    ``labels``: up to 10 lines of provenance for the header (80 ASCII characters each)."""
    path = Path(path)
    with atomic_write(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data, dtype=np.float32))
            mrc.voxel_size = float(pixel_size)
            mrc.update_header_stats()
            for text in labels[:10]:
                mrc.add_label(text.encode("ascii", "replace")[:80].decode("ascii"))
    return path


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """A JSON document from a file; InputError naming the file when it is missing, unreadable, not
    JSON, or nested too deeply to parse (a crafted file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise InputError(f"{path}: not a readable {what} (nested too deeply)") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InputError(f"{path}: not a readable {what} ({getattr(exc, 'strerror', None) or exc})") from None


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


def write_star(path: str | os.PathLike, block: str, columns: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """Write one STAR data block with a loop (RELION column names without the leading ``_``),
    through ``starfile``: names with spaces are quoted, floats written with 6 decimals."""
    import pandas as pd
    import starfile

    table = pd.DataFrame([list(r) for r in rows], columns=list(columns))
    path = Path(path)
    with atomic_write(path) as tmp:
        starfile.write({block: table}, tmp, float_format="%.6f")
    return path


def read_star(path: str | os.PathLike, block: str | None = None) -> dict[str, np.ndarray]:
    """One loop of a STAR file (``starfile``) as a dict column name -> array: the data block
    ``block``, else the only one, else ``particles`` (RELION 3.1+ files put the optics groups
    first), else the first block that is not ``optics``. Quoted values come back unquoted."""
    import starfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises a variety of parser errors
        raise InputError(f"{path}: not a readable STAR file ({exc})") from None
    tables = {name: table for name, table in blocks.items() if hasattr(table, "columns")}
    if block is not None:
        if block not in tables:
            raise InputError(f"{path}: no loop in data block {block!r} (blocks: {', '.join(blocks) or 'none'})")
        table = tables[block]
    elif not tables:
        raise InputError(f"{path}: no STAR loop found")
    elif len(tables) == 1:
        table = next(iter(tables.values()))
    else:
        table = tables.get("particles", next((t for n, t in tables.items() if n != "optics"), None))
    return {name: _column(table[name]) for name in table.columns}


def _column(values) -> np.ndarray:
    array = values.to_numpy()
    if array.dtype.kind in "iuf":
        return array.astype(np.float64)
    return array.astype(str)


def list_mrcs(folder: str | os.PathLike) -> list[Path]:
    """Sorted MRC files of a folder."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in MRC_SUFFIXES)


def file_digest(path: str | os.PathLike, digits: int = 12) -> str:
    """The first ``digits`` hex digits of a file's SHA-256 (which model file a log or output names)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:digits]
