"""3-D maps: the true potential of an atomic model, direct Fourier reconstruction from particle
images with known orientations and CTFs, and the FSC resolution between maps.

Conventions: maps are (z, y, x) arrays whose centre is voxel box//2 on each axis, as the particle
images' centre is pixel box//2 (:class:`nt2c_core.simulate.potential.Projector`). An image of
orientation A (RELION: a map point r projects to A r) holds, by the projection-slice theorem, the
map's Fourier transform on the central plane {A^T (kx, ky, 0)}.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..acquisition import Acquisition
from ..errors import InputError
from ..logs import staged
from ..metrics import FRC, fsc
from ..simulate.optics import CTFGrid
from ..simulate.potential import element_factor
from ..simulate.structure import Structure


def _band_crop_3d(spectrum: torch.Tensor, box: int) -> torch.Tensor:
    """The rfftn coefficients of a box³ grid taken from the rfftn of a larger cubic grid."""
    half = box // 2
    big = spectrum.shape[0]
    keep = torch.cat([torch.arange(half), torch.arange(big - (box - half), big)])
    return spectrum[keep][:, keep][..., : half + 1]


def density_map(
    structure: Structure, box: int, pixel_size: float, b_factor: float = 0.0, oversample: int = 2
) -> np.ndarray:
    """The Coulomb potential [V] of ``structure`` (centred at voxel box//2) on a box³ grid of
    ``pixel_size`` Å, with the same atomic form factors, B-factor, implicit hydrogens and excluded
    solvent as the particle images (its projection along z times the pixel size is their projected
    potential). Atoms are deposited trilinearly on a ``oversample`` x finer grid whose kernel is
    divided out in Fourier space."""
    fine = box * oversample
    fine_pixel = pixel_size / oversample
    k = torch.fft.fftfreq(box, d=pixel_size, dtype=torch.float64)
    kr = torch.fft.rfftfreq(box, d=pixel_size, dtype=torch.float64)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kr[None, None, :] ** 2
    kernel = (
        torch.sinc(k * fine_pixel)[:, None, None]
        * torch.sinc(k * fine_pixel)[None, :, None]
        * torch.sinc(kr * fine_pixel)[None, None, :]
    ) ** 2
    total = torch.zeros_like(k2, dtype=torch.complex128)
    for element, xyz in structure.coords.items():
        pos = torch.as_tensor(np.asarray(xyz, np.float64)) / fine_pixel + fine // 2  # (x, y, z) in fine voxels
        grid = torch.zeros(fine**3, dtype=torch.float64)
        for idx, w in trilinear_corners(pos, fine):
            grid.index_add_(0, idx, w)
        spectrum = _band_crop_3d(torch.fft.rfftn(grid.view(fine, fine, fine)), box)
        factor = element_factor(element, structure.hydrogens_per_atom(element), k2, b_factor)
        total += spectrum * factor / kernel
    # drop the Nyquist planes, as the projector does (no sub-voxel shift can be carried there)
    total[box // 2], total[:, box // 2], total[..., -1] = 0, 0, 0
    return (torch.fft.irfftn(total, s=(box, box, box)) / pixel_size**3).float().numpy()


def reconstruct(
    images: np.ndarray,
    rotations: np.ndarray,
    acq: Acquisition | None = None,
    defocus: np.ndarray | None = None,
    shifts: np.ndarray | None = None,
    pad: int = 2,
    regularization: float = 1e-3,
    batch: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """Direct Fourier reconstruction (box³, float32) from ``images`` (N, box, box) of known
    orientations ``rotations`` (N, 3, 3 RELION A matrices) and offsets ``shifts`` (N, 2) [px].

    With ``defocus`` (N, 3: U, V [Å], angle [deg]) and ``acq``, each image's transform is inserted
    times its CTF and the map is sum(CTF F) / (sum(CTF²) + eps) (CTF-weighted Wiener averaging;
    eps = ``regularization`` x the largest weight). Images are zero-padded ``pad`` x, inserted by
    trilinear interpolation into the padded 3-D transform with their Friedel mates, and the
    interpolation's real-space fall-off (sinc²) is divided out."""
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise InputError(f"reconstruction needs square particle images (N, box, box), got {images.shape}")
    n, box = images.shape[0], images.shape[1]
    if len(rotations) != n or (defocus is not None and len(defocus) != n):
        raise InputError(
            f"{n} images but {len(rotations)} orientations" + ("" if defocus is None else f" and {len(defocus)} CTFs")
        )
    if defocus is not None and acq is None:
        raise InputError("CTF weighting needs the acquisition (voltage, Cs, amplitude contrast, pixel size)")
    dev = torch.device(device)
    big = pad * box
    half = big // 2 + 1
    ky = torch.fft.fftfreq(big, device=dev) * big
    kx = torch.fft.rfftfreq(big, device=dev) * big
    plane = torch.stack(
        [kx[None, :].expand(big, -1), ky[:, None].expand(-1, half), torch.zeros(big, half, device=dev)], -1
    )
    inside = (plane[..., 0] ** 2 + plane[..., 1] ** 2) < (big / 2 - 1) ** 2
    plane = plane[inside]  # (m, 3) in (x, y, z) index units
    num_re = torch.zeros(big**3, dtype=torch.float64, device=dev)
    num_im = torch.zeros_like(num_re)
    den = torch.zeros_like(num_re)
    ctf_grid = CTFGrid((big, big), acq, envelope_defocus=None, device=dev) if defocus is not None else None
    offset = big // 2 - box // 2
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        block = torch.zeros((stop - start, big, big), device=dev)
        sub = torch.from_numpy(images[start:stop]).to(dev)
        block[:, offset : offset + box, offset : offset + box] = sub - sub.mean((1, 2), keepdim=True)
        spectra = torch.fft.rfft2(torch.fft.ifftshift(block, dim=(-2, -1)))
        if shifts is not None:
            s = torch.as_tensor(np.asarray(shifts[start:stop], np.float32), device=dev)
            phase = (
                2 * math.pi * (kx[None, None, :] * s[:, 0, None, None] + ky[None, :, None] * s[:, 1, None, None]) / big
            )
            spectra = spectra * torch.exp(1j * phase)
        for j in range(stop - start):
            i = start + j
            weight = torch.ones(big, half, device=dev)
            value = spectra[j]
            if ctf_grid is not None:
                du, dv, angle = (float(v) for v in defocus[i])
                weight = ctf_grid(du, dv, math.radians(angle))
                value = value * weight
                weight = weight * weight
            rot = torch.as_tensor(np.asarray(rotations[i], np.float32), device=dev)
            points = plane @ rot  # q^T A = (A^T q)^T
            values, weights = value[inside], weight[inside]
            for sign in (1.0, -1.0):
                _insert(num_re, num_im, den, sign * points, values.real, sign * values.imag, weights, big)
    num = torch.complex(num_re, num_im)
    eps = regularization * float(den.max()) if float(den.max()) > 0 else 1.0
    volume_ft = torch.where(den > 0, num / (den + eps), torch.zeros_like(num)).view(big, big, big)
    volume = torch.fft.fftshift(torch.fft.ifftn(volume_ft).real)
    x = (torch.arange(big, device=dev, dtype=torch.float64) - big // 2) / big
    sinc2 = torch.sinc(x) ** 2
    volume = volume / (sinc2[:, None, None] * sinc2[None, :, None] * sinc2[None, None, :])
    crop = slice(big // 2 - box // 2, big // 2 - box // 2 + box)
    return volume[crop, crop, crop].float().cpu().numpy()


def trilinear_corners(points: torch.Tensor, size: int):
    """(flat index, weight) of the 8 corners around each of ``points`` (m, 3: x, y, z in voxel units)
    on a periodic size³ grid stored z-major (index = (z * size + y) * size + x)."""
    base = torch.floor(points)
    frac = (points - base).double()
    base = base.long()
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                w = (
                    (frac[:, 0] if dx else 1 - frac[:, 0])
                    * (frac[:, 1] if dy else 1 - frac[:, 1])
                    * (frac[:, 2] if dz else 1 - frac[:, 2])
                )
                yield (
                    (((base[:, 2] + dz) % size) * size + (base[:, 1] + dy) % size) * size + (base[:, 0] + dx) % size,
                    w,
                )


def _insert(num_re, num_im, den, points, re, im, weights, big: int) -> None:
    """Trilinear splat of coefficients at ``points`` (m, 3: x, y, z index units) into flat grids."""
    for idx, w in trilinear_corners(points, big):
        num_re.index_add_(0, idx, w * re)
        num_im.index_add_(0, idx, w * im)
        den.index_add_(0, idx, w * weights)


def map_resolution(
    volume: np.ndarray,
    reference: np.ndarray,
    voxel_size: float,
    threshold: float = 0.143,
    mask_radius: float | None = None,
) -> float:
    """FSC resolution [Å] of ``volume`` against ``reference`` at ``threshold``, both multiplied by
    a soft spherical mask of ``mask_radius`` px (default: 0.45 box) so box-edge noise does not count."""
    box = volume.shape[0]
    mask = spherical_mask(box, mask_radius if mask_radius is not None else 0.45 * box)
    return fsc(volume * mask, reference * mask, voxel_size).resolution(threshold)


def spherical_mask(box: int, radius: float, edge: float = 3.0) -> np.ndarray:
    """A sphere of ``radius`` px about voxel box//2 with a raised-cosine edge of ``edge`` px."""
    r = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.arange(box) - box // 2] * 3, indexing="ij")))
    return np.clip(0.5 + 0.5 * np.cos(np.pi * np.clip((r - radius) / edge, 0, 1)), 0, 1).astype(np.float32)


@dataclass
class ReconstructionReport:
    """What :func:`reconstruct_star` wrote: the map, the particle count, and the FSC against the
    reference (None without one) with its CSV."""

    output: Path
    particles: int
    curve: FRC | None = None
    csv: Path | None = None


@staged("reconstruct")
def reconstruct_star(
    star: str | os.PathLike,
    output: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    ctf: bool = True,
    device: str = "cpu",
    contrast: str = "white",
) -> ReconstructionReport:
    """The ``nt2c reconstruct`` stage: the map of the particles of a RELION STAR file (their
    orientations, offsets and, with ``ctf``, CTFs), written atomically to ``output``; ``contrast``
    of the images: 'white' (protein bright, RELION's convention: the map is what
    ``relion_reconstruct --ctf`` gives) or 'dark' (physical contrast); with a
    ``reference`` map of the same box, the masked FSC against it, written as ``OUTPUT_STEM.fsc.csv``."""
    from .. import __version__
    from ..io import atomic_write, read_mrc_volume, write_mrc
    from ..settings import PARTICLE_CONTRAST
    from .star import ParticleTable

    if contrast not in PARTICLE_CONTRAST:
        raise InputError(f"--contrast = {contrast!r}: must be one of {', '.join(PARTICLE_CONTRAST)}")
    table = ParticleTable.read(star)
    images, _ = table.images()
    if contrast == "white":  # reconstruct() models physical contrast (dark particles)
        images = -images
    acq = table.acquisition()
    volume = reconstruct(
        images, table.rotations(), acq, table.defocus() if ctf else None, table.shifts_px(), device=device
    )
    output = write_mrc(output, volume, acq.pixel_size, [f"nt2c {__version__} reconstruct {len(images)} particles"])
    report = ReconstructionReport(output, len(images))
    if reference is not None:
        ref, _ = read_mrc_volume(reference)
        if ref.shape != volume.shape:
            raise InputError(f"{reference}: map of shape {ref.shape} differs from the reconstruction's {volume.shape}")
        mask = spherical_mask(volume.shape[0], 0.45 * volume.shape[0])
        report.curve = fsc(volume * mask, ref * mask, acq.pixel_size)
        report.csv = output.with_name(output.stem + ".fsc.csv")
        with atomic_write(report.csv) as tmp:
            tmp.write_text(
                "frequency_1_per_A,fsc\n"
                + "".join(f"{f:.5f},{c:.4f}\n" for f, c in zip(report.curve.frequency, report.curve.correlation))
            )
    return report
