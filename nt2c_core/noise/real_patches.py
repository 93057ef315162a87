"""The 'patches' noise model: noise fields tiled from the extracted real background patches
themselves, no GAN (NT2C learns a generator; this samples the data directly).

Each p x p block of a field is a randomly chosen real patch (z-scored with its micrograph's
statistics, as extracted), minus its own mean so that no block edge shows, randomly flipped up-
down and left-right (never rotated: row/column detector artifacts keep their orientation, as in
the GAN's training), the field offset by a random shift so block edges fall at different places
in every field. It keeps every property of the real noise within p px (histogram, spectrum above
1/p, texture) and none beyond; the GAN can extrapolate, but may also be wrong. It has the GAN
generator's ``sample`` interface, so :class:`nt2c_core.noise.reweight.NoiseTransfer` uses either.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError


class PatchMosaic:
    """Noise fields (count, 1, H, W) tiled from real noise patches (N, p, p)."""

    def __init__(self, patches: np.ndarray):
        patches = np.asarray(patches, np.float32)
        if patches.ndim != 3 or len(patches) < 2 or patches.shape[1] != patches.shape[2]:
            raise InputError(f"noise patches: need a stack of at least 2 square patches, got shape {patches.shape}")
        self.patches = torch.from_numpy(patches - patches.mean((1, 2), keepdims=True))
        self.size = int(patches.shape[1])
        self.config = {"name": "patch-mosaic", "patches": int(len(patches)), "patch": self.size}

    def to(self, device) -> "PatchMosaic":
        return self

    def eval(self) -> "PatchMosaic":
        return self

    def sample(self, count: int, size: int | tuple[int, int], seed: int, device="cpu") -> torch.Tensor:
        """``count`` fields of ``size`` px, seeded (the same seed gives the same fields)."""
        h, w = (size, size) if isinstance(size, int) else size
        p = self.size
        rows, cols = -(-h // p) + 1, -(-w // p) + 1
        rng = np.random.default_rng(int(seed))
        pick = rng.integers(len(self.patches), size=(count, rows, cols))
        flips = rng.integers(2, size=(count, rows, cols, 2)).astype(bool)
        blocks = self.patches[torch.from_numpy(pick.ravel())]
        up_down, left_right = torch.from_numpy(flips[..., 0].ravel()), torch.from_numpy(flips[..., 1].ravel())
        blocks[up_down] = blocks[up_down].flip(-2)
        blocks[left_right] = blocks[left_right].flip(-1)
        fields = blocks.reshape(count, rows, cols, p, p).permute(0, 1, 3, 2, 4).reshape(count, rows * p, cols * p)
        dy, dx = rng.integers(p, size=2)
        return fields[:, None, dy : dy + h, dx : dx + w].to(device)
