"""The networks nt2c can build, by the name stored in a model file's ``architecture`` metadata.

Torch-free: a name maps to the class's import path, so settings can be checked (at ``nt2c run``
start, in Scipion forms) without loading torch. Adding a network is one module under
``nt2c_core/models/`` plus one line here; training (``nt2c_core.training``) builds whatever the
config's ``architecture`` names and denoising (``nt2c_core.denoise``) asks the network for its
``size_multiple``, so neither changes.

A network class takes its sizes as keyword arguments (positive integers), keeps them with its
name in ``self.config`` (what model files store) and has a ``size_multiple`` attribute: the
input side lengths it needs to be a multiple of (1 when any size works).
"""

from __future__ import annotations

import importlib

ARCHITECTURES: dict[str, str] = {
    "unet": "nt2c_core.models.unet:UNet",  # the paper's denoising U-Net (2-D)
    "noise-generator": "nt2c_core.models.gan:NoiseGenerator",  # the WGAN-GP noise generator
    "unet3d": "nt2c_core.models.unet3d:UNet3D",  # NMSG's residual 3-D U-Net (tomograms)
    "sr3-restorer": "nt2c_core.models.sr3:SR3Restorer",  # SR3 diffusion + post-processing (particles)
}


def check_architecture(config) -> str | None:
    """Why ``config`` (a model file's or a training config's ``architecture``) is not buildable,
    or None: a dict with a known ``name``, positive integer sizes and true/false switches."""
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        return "needs an object with a 'name'"
    if config["name"] not in ARCHITECTURES:
        return f"unknown architecture {config['name']!r} (known: {', '.join(ARCHITECTURES)})"
    bad = [
        k for k, v in config.items() if k != "name" and not isinstance(v, bool) and (not isinstance(v, int) or v < 1)
    ]
    if bad:
        return f"{', '.join(f'{k}={config[k]!r}' for k in bad)} must be positive integers (or true/false switches)"
    return None


def network_class(name: str):
    module, _, cls = ARCHITECTURES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build(config: dict):
    """A fresh network (an ``nn.Module``) from an ``architecture`` config; ValueError when the
    config is not buildable (see :func:`check_architecture`) or the class refuses the sizes."""
    problem = check_architecture(config)
    if problem:
        raise ValueError(problem)
    return network_class(config["name"])(**{k: v for k, v in config.items() if k != "name"})
