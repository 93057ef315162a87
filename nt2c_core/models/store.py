"""NT2C model files: one ``torch.save`` file holding weights plus JSON metadata, no code.

Layout: {"format": "nt2c-model", "format_version": 1, "metadata": <JSON text>, "state_dict": {...}}.
Loaded with ``torch.load(weights_only=True)``, so opening a model never runs pickled code. The
metadata holds the architecture, the normalization, the acquisition and pixel size trained for,
a training-data summary, the seed and the package/torch versions.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import __version__
from ..errors import InputError
from ..io import atomic_write

if TYPE_CHECKING:
    import numpy as np

FORMAT = "nt2c-model"
FORMAT_VERSION = 1
KINDS = ("denoiser", "noise-gan", "tomo-denoiser", "particle-restorer")


class ModelFileError(InputError):
    """A file that is not an NT2C model, or one for another architecture."""


def save_model(path: str | os.PathLike, network: nn.Module, metadata: dict, extras: dict | None = None) -> Path:
    """Write ``network``'s weights (on CPU, float32), ``metadata`` and named ``extras`` (arrays that
    are data, not weights: e.g. a restorer's training references) atomically."""
    meta = {**metadata, "architecture": network.config, "nt2c_version": __version__, "torch_version": torch.__version__}
    state = {k: v.detach().float().cpu().contiguous() for k, v in network.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": json.dumps(meta), "state_dict": state}
    if extras:
        payload["extras"] = {k: torch.as_tensor(v).detach().float().cpu().contiguous() for k, v in extras.items()}
    return save_torch(path, payload)


def save_torch(path: str | os.PathLike, payload: dict) -> Path:
    """``torch.save`` to memory, then an atomic write of the bytes: a full disk is an OSError
    with a clear message and no half-written file (torch's own writer reports it as an opaque
    RuntimeError and can leave a partial zip)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def fingerprint(network: nn.Module) -> str:
    """First 16 hex digits of the SHA-256 of a network's weights: what made an output (MRC label)."""
    digest = hashlib.sha256()
    for name, value in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def all_finite(state: dict) -> bool:
    """Whether every floating-point tensor of a state dict is free of NaN/Inf."""
    return all(
        bool(torch.isfinite(v).all()) for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()
    )


def read_model_file(path: str | os.PathLike) -> dict:
    """The raw payload of a model file, checked to be an NT2C model: the format marker and
    version, metadata that is a JSON object with a known kind and a buildable architecture,
    and a state dict of tensors. One clear message per defect, naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        data = path.read_bytes()  # read once: loaded and hashed from the same bytes
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated zip, plain text...
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
            raise ModelFileError(
                f"{path}: not an NT2C model file: it holds pickled Python objects, which nt2c "
                "never loads (an NT2C model holds only weights and JSON metadata)"
            ) from None
        raise ModelFileError(f"{path}: not an NT2C model file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an NT2C model file (no '{FORMAT}' marker)")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path}: damaged model file: format_version {version!r} is not a whole number")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format {version} is newer than this nt2c supports")
    payload["metadata"] = _checked_metadata(path, payload.get("metadata"))
    payload["file_sha256"] = hashlib.sha256(data).hexdigest()
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: damaged model file: it holds no weights (state_dict)")
    extras = payload.setdefault("extras", {})
    if not isinstance(extras, dict) or not all(isinstance(v, torch.Tensor) for v in extras.values()):
        raise ModelFileError(f"{path}: damaged model file: its extras are not named arrays")
    if not all_finite(extras):
        raise ModelFileError(f"{path}: damaged model file: its extras hold NaN/Inf")
    return payload


def _checked_metadata(path: Path, text) -> str:
    """The metadata JSON text, checked: an object with a known kind and an architecture object."""
    if not isinstance(text, str):
        raise ModelFileError(f"{path}: damaged model file: metadata missing or not JSON text")
    try:
        meta = json.loads(text)
    except ValueError:
        raise ModelFileError(f"{path}: damaged model file: metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: damaged model file: metadata is a {type(meta).__name__}, not a JSON object")
    kind = meta.get("kind", "denoiser")
    if kind not in KINDS:
        raise ModelFileError(f"{path}: unknown model kind {kind!r} (nt2c knows {', '.join(KINDS)})")
    arch = meta.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise ModelFileError(f"{path}: damaged model file: metadata has no architecture object with a name")
    return text


def build_network(config: dict) -> nn.Module:
    """A fresh network from the ``architecture`` config stored in a model file."""
    from .registry import build

    return build(config)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", kind: str | None = None
) -> tuple[nn.Module, dict]:
    """(network in eval mode on ``device``, metadata) from a model file; ``kind`` ('denoiser',
    'noise-gan') refuses a model of another kind."""
    network, metadata, _ = load_model_with_extras(path, device, kind)
    return network, metadata


def load_model_with_extras(
    path: str | os.PathLike, device: str | torch.device = "cpu", kind: str | None = None
) -> tuple[nn.Module, dict, dict[str, "np.ndarray"]]:
    """:func:`load_model` plus the file's extras as float32 numpy arrays ({} when it has none)."""
    payload = read_model_file(path)
    metadata = json.loads(payload["metadata"])
    if kind is not None and metadata.get("kind", "denoiser") != kind:
        raise ModelFileError(f"{path}: is a {metadata.get('kind', 'denoiser')!r} model, expected a {kind!r} model")
    try:
        with torch.device("meta"):  # shapes only: a crafted size allocates nothing before it is refused
            shapes = {k: tuple(v.shape) for k, v in build_network(metadata["architecture"]).state_dict().items()}
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: its architecture {metadata['architecture']} cannot be built ({exc})") from None
    stored = {k: tuple(v.shape) for k, v in payload["state_dict"].items() if hasattr(v, "shape")}
    if shapes != stored:
        wrong = sorted(set(shapes) ^ set(stored)) or [k for k in shapes if shapes[k] != stored.get(k)]
        raise ModelFileError(
            f"{path}: weights do not fit the architecture it declares "
            f"{metadata['architecture']} (first difference: {wrong[0]})"
        )
    try:
        network = build_network(metadata["architecture"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: its architecture {metadata['architecture']} cannot be built ({exc})") from None
    try:
        network.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: weights do not fit the architecture it declares ({str(exc)[:300]})") from None
    if not all_finite(payload["state_dict"]):
        raise ModelFileError(
            f"{path}: weights are not finite (NaN/Inf): the training that wrote it diverged; "
            "retrain with a lower learning rate"
        )
    logging.getLogger(__name__).info(describe_model(path, metadata, payload["file_sha256"]))
    extras = {k: v.numpy() for k, v in payload["extras"].items()}
    return network.to(device).eval(), metadata, extras


def describe_model(path: str | os.PathLike, metadata: dict, sha256: str) -> str:
    """The line a run logs for each model it loads: file, kind, file hash (``sha256``, hex) and
    provenance, e.g. ``model /x/fine.pt: denoiser (fine stage), sha256 1a2b3c4d5e6f, 1.06 Å/px, nt2c 0.1.0``."""
    parts = [metadata.get("kind", "denoiser") + (f" ({metadata['stage']} stage)" if metadata.get("stage") else "")]
    parts.append(f"sha256 {sha256[:12]}")
    if isinstance(metadata.get("pixel_size"), (int, float)):
        parts.append(f"{metadata['pixel_size']:.3g} Å/px")
    if metadata.get("nt2c_version"):
        parts.append(f"nt2c {metadata['nt2c_version']}")
    return f"model {path}: " + ", ".join(parts)
