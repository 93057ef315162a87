"""NT2C model files: one ``torch.save`` file holding weights plus JSON metadata, no code.

Layout: {"format": "nt2c-model", "format_version": 1, "metadata": <JSON text>, "state_dict": {...}}.
Loaded with ``torch.load(weights_only=True)``, so opening a model never runs pickled code. The
metadata holds the architecture, the normalization, the acquisition and pixel size trained for,
a training-data summary, the seed and the package/torch versions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import InputError
from ..io import atomic_write

FORMAT = "nt2c-model"
FORMAT_VERSION = 1


class ModelFileError(InputError):
    """A file that is not an NT2C model, or one for another architecture."""


def save_model(path: str | os.PathLike, network: nn.Module, metadata: dict) -> Path:
    """Write ``network``'s weights (on CPU, float32) and ``metadata`` atomically."""
    meta = {**metadata, "architecture": network.config, "nt2c_version": __version__,
            "torch_version": torch.__version__}
    state = {k: v.detach().float().cpu() for k, v in network.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": json.dumps(meta), "state_dict": state}
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_model_file(path: str | os.PathLike) -> dict:
    """The raw payload of a model file, checked to be an NT2C model."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated zip, plain text...
        raise ModelFileError(f"{path}: not an NT2C model file ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an NT2C model file (no '{FORMAT}' marker)")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format {payload['format_version']} is newer than this nt2c supports")
    return payload


def build_network(config: dict) -> nn.Module:
    """A fresh network from the ``architecture`` config stored in a model file."""
    from .gan import NoiseGenerator
    from .unet import UNet

    classes = {"unet": UNet, "noise-generator": NoiseGenerator}
    name = config.get("name")
    if name not in classes:
        raise ValueError(f"unknown architecture {name!r}")
    return classes[name](**{k: v for k, v in config.items() if k != "name"})


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               kind: str | None = None) -> tuple[nn.Module, dict]:
    """(network in eval mode on ``device``, metadata) from a model file; ``kind`` ('denoiser',
    'noise-gan') refuses a model of another kind."""
    payload = read_model_file(path)
    metadata = json.loads(payload["metadata"])
    if kind is not None and metadata.get("kind", "denoiser") != kind:
        raise ModelFileError(f"{path}: is a {metadata.get('kind')!r} model, expected a {kind!r} model")
    try:
        network = build_network(metadata["architecture"])
        network.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: weights do not fit the architecture it declares ({str(exc)[:300]})") from exc
    return network.to(device).eval(), metadata
