"""A tomogram's own noise: the quietest cubes of the volume, and two synthesizers drawing new noise
volumes from them (NMSG adds such noise to the volume to make its noisier training inputs).

Noise cubes: the volume (z-scored) is Gaussian-smoothed (sigma 2 px), cut into non-overlapping
blocks (depth x cube x cube), and the ``fraction`` with the lowest smoothed standard deviation (no
particle, no membrane, often the volume outside the ice slab) are kept, each minus its own mean.
Blocks deeper than wide keep more of the noise's long correlation along z (a weighted
back-projection's noise stays correlated across the whole thickness) without taking in more signal
than small cubes do; larger x-y sides would (README, Measured;
benchmarks/results/2026-12-02-tomo-noiseblocks-vm.json).

Synthesizers (all have ``sample(count, (d, h, w), seed) -> (count, 1, d, h, w)``):
- :class:`CubeMosaic` ('patches3d', our default): 3-D mosaics of the real cubes, randomly flipped,
  randomly offset. It keeps the noise's 3-D correlations within a cube (WBP noise is streaky in z).
- :class:`SliceGAN` ('gan2d', the authors'): a 2-D WGAN-GP generator trained on the cubes' x-y
  slices, one independent sample per z slice (no correlation between slices).
- :class:`PowerCapped` (``noise_cap``, on by default): either one's noise filtered so that at no
  spatial frequency it carries more power than the volume itself (signal + noise) does. A mosaic's
  seams put 2-7x the real noise's power at low x-y and high z frequencies, where a tilt series'
  missing wedge leaves the volume almost empty; noise cannot have more power than the volume at
  any frequency, so the cap removes that excess (and the signal the quiet blocks carry at low
  frequencies) without knowing the tilt range.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch
from scipy.ndimage import gaussian_filter, uniform_filter

from ..errors import InputError

MIN_CUBES = 8
GAN_PATCH = 32  # the GAN works on 32-px x-y slices
CAP_TILES = 256  # tiles of the volume, and noise samples, whose mean power spectra set the cap
CAP_SMOOTH = 3  # both mean spectra are box-smoothed over this many frequency bins per axis
CAP_SHAPE = (128, 256, 256)  # the cap is measured on crops of the volume of at most this size [px] (z, y, x)
CAP_DRAWS = 4  # synthetic noise volumes of that size whose mean power spectrum the cap compares
CAP_SLACK = 1.1  # the noise may exceed the volume's power by this factor: the scatter of the volume's
# spectrum, estimated from the few independent tiles a small tomogram holds (a 160 x 160 x 64 volume: a
# dozen), would otherwise push the gain below 1 where the two spectra are equal (measured: 3-6 % less
# noise power than the real noise's outside the wedge without slack, 0-4 % with 1.1)


def fitting_block(
    shape: tuple[int, int, int], cube: int, fraction: float, smallest: int = 8, depth: int | None = None
) -> tuple[int, int]:
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
        raise InputError(
            f"volume {w} x {h} x {d} px holds only {nz * ny * nx} noise blocks of {cube} x {cube} x "
            f"{depth} px; need {int(np.ceil(MIN_CUBES / fraction))} (use a smaller --noise-cube or a larger "
            "--noise-fraction)"
        )
    smooth = gaussian_filter(volume.astype(np.float32), 2.0)

    def blocks(v: np.ndarray) -> np.ndarray:
        v = v[: nz * depth, : ny * cube, : nx * cube].reshape(nz, depth, ny, cube, nx, cube)
        return v.transpose(0, 2, 4, 1, 3, 5).reshape(-1, depth, cube, cube)

    score = blocks(smooth).std(axis=(1, 2, 3))
    keep = np.argsort(score, kind="stable")[: max(MIN_CUBES, int(round(fraction * len(score))))]
    cubes = blocks(volume.astype(np.float32))[np.sort(keep)]
    cubes = cubes - cubes.mean(axis=(1, 2, 3), keepdims=True)
    if np.any(cubes.reshape(len(cubes), -1).std(1) == 0):
        raise InputError(
            "the volume has constant regions (zero-variance noise blocks): is it masked or padded? "
            "crop it to the reconstructed area"
        )
    return cubes


class CubeMosaic:
    """Noise volumes tiled from real noise cubes (N, d, c, c)."""

    def __init__(self, cubes: np.ndarray):
        cubes = np.asarray(cubes, np.float32)
        if cubes.ndim != 4 or len(cubes) < 2:
            raise InputError(f"noise cubes: need a stack of at least 2 blocks, got shape {cubes.shape}")
        self.cubes = cubes - cubes.mean(axis=(1, 2, 3), keepdims=True)
        self.block = tuple(int(n) for n in cubes.shape[1:])

    def sample(self, count: int, shape: tuple[int, int, int], seed: int, device="cpu") -> torch.Tensor:
        d, h, w = shape
        bd, bh, bw = self.block
        nd, nh, nw = -(-d // bd) + 1, -(-h // bh) + 1, -(-w // bw) + 1
        rng = np.random.default_rng(int(seed))
        pick = rng.integers(len(self.cubes), size=count * nd * nh * nw)
        flips = rng.integers(2, size=(len(pick), 3)).astype(bool)
        oz, oy, ox = rng.integers(bd), rng.integers(bh), rng.integers(bw)
        out = np.empty((count, 1, d, h, w), np.float32)
        # block (i, j, k) of the mosaic covers [i*bd, (i+1)*bd) ...; the sample is the mosaic's
        # window from (oz, oy, ox): each block is copied, flipped, straight into its part of it
        for index, (c, i, j, k) in enumerate(np.ndindex(count, nd, nh, nw)):
            z0, z1 = max(i * bd - oz, 0), min((i + 1) * bd - oz, d)
            y0, y1 = max(j * bh - oy, 0), min((j + 1) * bh - oy, h)
            x0, x1 = max(k * bw - ox, 0), min((k + 1) * bw - ox, w)
            if z1 > z0 and y1 > y0 and x1 > x0:
                block = np.flip(self.cubes[pick[index]], tuple(np.flatnonzero(flips[index])))
                bz, by, bx = z0 + oz - i * bd, y0 + oy - j * bh, x0 + ox - k * bw
                out[c, 0, z0:z1, y0:y1, x0:x1] = block[bz : bz + z1 - z0, by : by + y1 - y0, bx : bx + x1 - x0]
        return torch.from_numpy(out).to(device)


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


def tile_origins(
    rng: np.random.Generator, shape: tuple[int, ...], tile: tuple[int, int, int], count: int
) -> np.ndarray:
    """``count`` random (z, y, x) origins of ``tile``-sized crops inside a volume of ``shape``."""
    return np.stack([rng.integers(0, max(n - t, 0) + 1, count) for n, t in zip(shape, tile)], 1)


def crop_tile(volume: np.ndarray, origin, tile, flip=(0, 0, 0)) -> np.ndarray:
    """The ``tile`` of ``volume`` at ``origin`` (z, y, x), flipped along the axes where ``flip`` is 1."""
    z, y, x = origin
    block = volume[z : z + tile[0], y : y + tile[1], x : x + tile[2]]
    axes = tuple(i for i, f in enumerate(flip) if f)
    return np.ascontiguousarray(np.flip(block, axes)) if axes else block


def tile_power(tiles: np.ndarray) -> np.ndarray:
    """Summed power spectrum (full FFT grid, fftshifted) of (N, d, h, w) tiles, each minus its mean
    and Hann-windowed along every axis (the window keeps the tiles' edges from leaking power into
    the nearly empty missing wedge); divided by the tile size, so that the sum over N tiles of
    white noise of variance v is about N v everywhere."""
    t = np.asarray(tiles, np.float32)
    t = t - t.mean(axis=(1, 2, 3), keepdims=True)
    window = np.ones(t.shape[1:], np.float32)
    for axis, size in enumerate(t.shape[1:]):
        shape = [1, 1, 1]
        shape[axis] = size
        window = window * np.hanning(size + 2)[1:-1].astype(np.float32).reshape(shape)
    t = t * (window / np.sqrt((window**2).mean()))
    power = (np.abs(scipy.fft.fftn(t, axes=(1, 2, 3))) ** 2).sum(0) / t[0].size
    return np.fft.fftshift(power)


def _linear_weights(freqs: np.ndarray, size: int) -> np.ndarray:
    """(len(freqs), size) weights interpolating, linearly and periodically, a fftshifted grid of
    ``size`` frequency bins at ``freqs`` [cycles/px]."""
    index = freqs * size + size // 2
    low = np.floor(index).astype(int)
    frac = (index - low).astype(np.float32)
    weights = np.zeros((len(freqs), size), np.float32)
    rows = np.arange(len(freqs))
    np.add.at(weights, (rows, low % size), 1 - frac)
    np.add.at(weights, (rows, (low + 1) % size), frac)
    return weights


def cap_gain(p_volume: np.ndarray, p_noise: np.ndarray) -> np.ndarray:
    """sqrt(min(1, CAP_SLACK * P_volume / P_noise)) of two power spectra on the same grid, each
    box-smoothed over CAP_SMOOTH bins per axis first (float32)."""
    p_volume = uniform_filter(p_volume, CAP_SMOOTH, mode="wrap")
    p_noise = uniform_filter(p_noise, CAP_SMOOTH, mode="wrap")
    ratio = CAP_SLACK * p_volume / np.maximum(p_noise, 1e-12 * p_noise.max())
    return np.sqrt(np.clip(ratio, 0.0, 1.0)).astype(np.float32)


class PowerCapped:
    """The noise of another synthesizer filtered by a fixed gain per spatial frequency (``gain``:
    fftshifted grid, values in [0, 1]; interpolated, periodically, to every requested shape)."""

    def __init__(self, synthesizer, gain: np.ndarray):
        self.synthesizer = synthesizer
        self.gain = np.asarray(gain, np.float32)
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    @classmethod
    def fit(
        cls, synthesizer, volume: np.ndarray, shape: tuple[int, int, int], seed: int = 0, count: int = CAP_TILES
    ) -> "PowerCapped":
        """Cap ``synthesizer``'s noise at the power spectrum of the z-scored ``volume``: the gain is
        sqrt(min(1, CAP_SLACK * P_volume / P_noise)), both mean spectra of ``count`` tiles of ``shape``
        (z, y, x; the training tile), smoothed over CAP_SMOOTH bins per axis."""
        shape = tuple(min(int(t), int(n)) for t, n in zip(shape, volume.shape))
        rng = np.random.default_rng([seed, 7])
        p_volume = np.zeros(shape, np.float64)
        p_noise = np.zeros(shape, np.float64)
        for start in range(0, count, 32):
            k = min(32, count - start)
            origins = tile_origins(rng, volume.shape, shape, k)
            p_volume += tile_power(np.stack([crop_tile(volume, o, shape) for o in origins]))
            p_noise += tile_power(synthesizer.sample(k, shape, seed=seed * 1_000_003 + 977 + start)[:, 0].numpy())
        return cls(synthesizer, cap_gain(p_volume, p_noise))

    def gain_for(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The gain on the rfft grid of a (d, h, w) volume: trilinear, periodic interpolation, one axis
        at a time (no full-size coordinate arrays on large tomograms)."""
        shape = tuple(int(n) for n in shape)
        if shape not in self._cache:
            freqs = (np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), np.fft.rfftfreq(shape[2]))
            gain = self.gain
            for axis, (f, g) in enumerate(zip(freqs, self.gain.shape)):
                gain = np.moveaxis(np.tensordot(_linear_weights(f, g), gain, axes=([1], [axis])), 0, axis)
            self._cache[shape] = np.ascontiguousarray(gain, np.float32)
        return self._cache[shape]

    def sample(self, count: int, shape: tuple[int, int, int], seed: int, device="cpu") -> torch.Tensor:
        spectrum = scipy.fft.rfftn(self.synthesizer.sample(count, shape, seed)[:, 0].numpy(), axes=(1, 2, 3))
        spectrum *= self.gain_for(shape)
        noise = scipy.fft.irfftn(spectrum, s=tuple(shape), axes=(1, 2, 3), overwrite_x=True)
        del spectrum
        return torch.from_numpy(noise.astype(np.float32, copy=False)[:, None]).to(device)


def crop_power(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Mean power spectrum (full grid, fftshifted, float32) of the volume's corner crops of ``shape``
    (one crop when the shapes agree), with no window: a window's transform would smear the strong
    power outside the missing wedge into it, where the noise is tens of times weaker."""
    starts = [sorted({0, n - s}) for n, s in zip(volume.shape, shape)]
    origins = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    power = np.zeros(shape, np.float32)
    for origin in origins:
        tile = crop_tile(volume, origin, shape).astype(np.float32)
        power += np.abs(scipy.fft.fftn(tile - tile.mean(), workers=-1)) ** 2
    return np.fft.fftshift(power / (len(origins) * power.size))


def fine_cap(synthesizer, volume: np.ndarray, seed: int = 0) -> PowerCapped:
    """``synthesizer``'s noise capped at the power of the z-scored ``volume``, both measured at the
    resolution of a crop of up to CAP_SHAPE (the whole volume when it fits): sharp enough in
    frequency to follow a missing wedge, where noise cut into small blocks leaks 2-6x the true
    noise's power. Measured there (benchmarks/bench_tomo_third_party.py): a closer match to the
    true noise that trains a worse NMSG (-2.3 and -0.5 dB on two third-party tomograms), so NMSG's
    default stays the tile-sized cap; the benchmark reports both matches."""
    shape = tuple(min(n, c) for n, c in zip(volume.shape, CAP_SHAPE))
    p_volume = crop_power(volume, shape)
    p_noise = np.zeros(shape, np.float32)
    for k in range(CAP_DRAWS):
        p_noise += crop_power(synthesizer.sample(1, shape, seed=seed * 1_000_003 + 977 + k)[0, 0].numpy(), shape)
    return PowerCapped(synthesizer, cap_gain(p_volume, p_noise / CAP_DRAWS))
