"""A tomogram's own noise: the quietest cubes of the volume, and two synthesizers drawing new noise
volumes from them (NMSG adds such noise to the volume to make its noisier training inputs).

Noise cubes: the volume (z-scored) is Gaussian-smoothed (sigma 2 px), cut into non-overlapping
blocks (depth x cube x cube), and the ``fraction`` with the lowest smoothed standard deviation (no
particle, no membrane, often the volume outside the ice slab) are kept, each minus its own mean.
Blocks deeper than wide keep more of the noise's long correlation along z (a weighted
back-projection's noise stays correlated across the whole thickness) without taking in more signal
than small cubes do; larger x-y sides would (README, Measured;
benchmarks/results/2026-12-02-tomo-noiseblocks-vm.json).

Synthesizers (both have ``sample(count, (d, h, w), seed) -> (count, 1, d, h, w)``):
- :class:`CubeMosaic` ('patches3d', our default): 3-D mosaics of the real cubes, randomly flipped,
  randomly offset. It keeps the noise's 3-D correlations within a cube (WBP noise is streaky in z).
- :class:`SliceGAN` ('gan2d', the authors'): a 2-D WGAN-GP generator trained on the cubes' x-y
  slices, one independent sample per z slice (no correlation between slices).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..errors import InputError

MIN_CUBES = 8
GAN_PATCH = 32  # the GAN works on 32-px x-y slices


def fitting_block(shape: tuple[int, int, int], cube: int, fraction: float, smallest: int = 8,
                 depth: int | None = None) -> tuple[int, int]:
    """(depth, cube): the noise blocks' z and x-y sides [px], the larger one halved until the volume
    holds enough blocks for MIN_CUBES noise cubes (not below ``smallest``; ``depth`` defaults to
    ``cube`` and is capped at the volume's depth): small volumes still get a noise model."""
    depth = min(depth or cube, shape[0])

    def blocks(dz: int, c: int) -> int:
        return (shape[0] // dz) * (shape[1] // c) * (shape[2] // c)

    while blocks(depth, cube) < MIN_CUBES / fraction:
        if depth >= cube and depth // 2 >= smallest:
            depth //= 2
        elif cube // 2 >= smallest:
            cube //= 2
        elif depth // 2 >= smallest:
            depth //= 2
        else:
            break
    return depth, cube


def noise_cubes(volume: np.ndarray, cube: int, fraction: float, depth: int | None = None) -> np.ndarray:
    """The quietest (depth x cube x cube) blocks of a z-scored ``volume`` (N, depth, cube, cube),
    each minus its mean; InputError when the volume holds fewer than MIN_CUBES blocks."""
    depth = depth or cube
    d, h, w = volume.shape
    nz, ny, nx = d // depth, h // cube, w // cube
    if nz * ny * nx < MIN_CUBES / fraction:
        raise InputError(f"volume {w} x {h} x {d} px holds only {nz * ny * nx} noise blocks of {cube} x {cube} x "
                         f"{depth} px; need {int(np.ceil(MIN_CUBES / fraction))} (use a smaller --noise-cube or a larger "
                         "--noise-fraction)")
    smooth = gaussian_filter(volume.astype(np.float32), 2.0)

    def blocks(v: np.ndarray) -> np.ndarray:
        v = v[:nz * depth, :ny * cube, :nx * cube].reshape(nz, depth, ny, cube, nx, cube)
        return v.transpose(0, 2, 4, 1, 3, 5).reshape(-1, depth, cube, cube)

    score = blocks(smooth).std(axis=(1, 2, 3))
    keep = np.argsort(score, kind="stable")[:max(MIN_CUBES, int(round(fraction * len(score))))]
    cubes = blocks(volume.astype(np.float32))[np.sort(keep)]
    cubes = cubes - cubes.mean(axis=(1, 2, 3), keepdims=True)
    if np.any(cubes.reshape(len(cubes), -1).std(1) == 0):
        raise InputError("the volume has constant regions (zero-variance noise blocks): is it masked or padded? "
                         "crop it to the reconstructed area")
    return cubes


class CubeMosaic:
    """Noise volumes tiled from real noise cubes (N, d, c, c)."""

    def __init__(self, cubes: np.ndarray):
        cubes = np.asarray(cubes, np.float32)
        if cubes.ndim != 4 or len(cubes) < 2:
            raise InputError(f"noise cubes: need a stack of at least 2 blocks, got shape {cubes.shape}")
        self.cubes = torch.from_numpy(cubes - cubes.mean(axis=(1, 2, 3), keepdims=True))
        self.block = tuple(int(n) for n in cubes.shape[1:])

    def sample(self, count: int, shape: tuple[int, int, int], seed: int, device="cpu") -> torch.Tensor:
        d, h, w = shape
        bd, bh, bw = self.block
        nd, nh, nw = -(-d // bd) + 1, -(-h // bh) + 1, -(-w // bw) + 1
        rng = np.random.default_rng(int(seed))
        pick = rng.integers(len(self.cubes), size=count * nd * nh * nw)
        flips = rng.integers(2, size=(len(pick), 3)).astype(bool)
        blocks = self.cubes[torch.from_numpy(pick)]
        for axis in range(3):
            sel = torch.from_numpy(flips[:, axis])
            blocks[sel] = blocks[sel].flip(axis + 1)
        vol = blocks.reshape(count, nd, nh, nw, bd, bh, bw).permute(0, 1, 4, 2, 5, 3, 6)
        vol = vol.reshape(count, nd * bd, nh * bh, nw * bw)
        oz, oy, ox = rng.integers(bd), rng.integers(bh), rng.integers(bw)
        return vol[:, None, oz:oz + d, oy:oy + h, ox:ox + w].to(device)


class SliceGAN:
    """Noise volumes from a 2-D noise generator, one independent x-y sample per z slice."""

    def __init__(self, generator):
        self.generator = generator.eval()

    def sample(self, count: int, shape: tuple[int, int, int], seed: int, device="cpu") -> torch.Tensor:
        d, h, w = shape
        gen = self.generator.to(device)
        out = gen.sample(count * d, (h, w), seed, device)
        return out.reshape(count, d, h, w)[:, None]


def gan_slices(cubes: np.ndarray) -> np.ndarray:
    """The x-y slices (N * d, c, c) of noise cubes, each minus its mean: the 2-D GAN's training set."""
    slices = np.asarray(cubes, np.float32).reshape(-1, cubes.shape[-2], cubes.shape[-1])
    return slices - slices.mean(axis=(1, 2), keepdims=True)
