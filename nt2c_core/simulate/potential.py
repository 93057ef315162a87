"""Projected Coulomb potential of atoms (V Å), exact for Gaussian (Peng 1996) atoms.

Design (see shared design notes): deposit each element's atoms on a 2x oversampled grid with
cubic B-spline weights, FFT, keep the output grid's band, divide by the deposit kernel,
multiply by the element's analytic projected form factor (with B-factor, implicit hydrogens and
excluded solvent), sum the elements. No 3-D volume is ever built.

Form factors: f(k) = sum_i a_i exp(-b_i k^2 / 4) [Å], k in 1/Å (gemmi's ``c4322`` table, Peng
1996). Projected potential: V_z(k) = K f(k) with K = 47.878 V Å^2, so the integral of V_z over the
plane equals K sum_i a_i.
"""

from __future__ import annotations

import math
from functools import lru_cache

import gemmi
import numpy as np
import torch

from .structure import Structure

POTENTIAL_CONSTANT = 47.878  # K = h^2 / (2 pi m0 e) in V Å^2
ICE_MEAN_POTENTIAL = 4.5  # mean inner potential of vitreous ice [V]
EXCLUDED_VOLUME = 17.0  # solvent volume displaced by each heavy atom [Å^3]


@lru_cache(maxsize=None)
def form_factor_coefficients(element: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Peng (1996) 5-Gaussian electron scattering factor coefficients (a_i [Å], b_i [Å^2])."""
    coef = gemmi.Element(element).c4322
    return tuple(coef.a), tuple(coef.b)


def atom_projected_potential_ft(element: str, k2: torch.Tensor, b_factor: float) -> torch.Tensor:
    """2-D Fourier transform of one atom's projected potential [V Å^3] at squared frequency k2 [1/Å^2]."""
    a, b = form_factor_coefficients(element)
    out = torch.zeros_like(k2)
    for ai, bi in zip(a, b):
        out += ai * torch.exp(-(bi + b_factor) * k2 / 4.0)
    return POTENTIAL_CONSTANT * out


def atom_projected_potential(element: str, rho: np.ndarray, b_factor: float) -> np.ndarray:
    """Real-space projected potential [V Å] of one atom at radial distance rho [Å]."""
    a, b = form_factor_coefficients(element)
    rho2 = np.asarray(rho, dtype=np.float64) ** 2
    total = sum(
        ai * (4 * math.pi / (bi + b_factor)) * np.exp(-4 * math.pi**2 * rho2 / (bi + b_factor)) for ai, bi in zip(a, b)
    )
    return POTENTIAL_CONSTANT * total


def element_factor(
    element: str, hydrogens: float, k2: torch.Tensor, b_factor: float, solvent: bool = True
) -> torch.Tensor:
    """Fourier factor of one heavy atom with its implicit hydrogens, minus the ice it displaces."""
    out = atom_projected_potential_ft(element, k2, b_factor)
    if hydrogens:
        out = out + hydrogens * atom_projected_potential_ft("H", k2, b_factor)
    if solvent and element != "H":
        v0 = EXCLUDED_VOLUME
        out = out - ICE_MEAN_POTENTIAL * v0 * torch.exp(-math.pi * v0 ** (2 / 3) * k2 - b_factor * k2 / 4.0)
    return out


def _bspline_weights(frac: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline weights (4, n) of the grid points -1, 0, 1, 2 around points at offset ``frac``."""
    f2, f3 = frac * frac, frac * frac * frac
    return torch.stack([(1 - frac) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * frac + 1) / 6, f3 / 6])


def _deposit(xy: torch.Tensor, groups: torch.Tensor, n_groups: int, size: int) -> torch.Tensor:
    """Deposit points (grid units) into ``n_groups`` periodic grids of size^2 with cubic B-spline
    weights (4 x 4 stencil). Its Fourier kernel is sinc^4 per axis, so the aliasing of the point
    spectra near the output band edge is about 10x weaker than with cloud-in-cell weights."""
    base = torch.floor(xy)
    frac = (xy - base).float()
    steps = torch.arange(-1, 3, device=xy.device)[:, None]
    cols = (base[:, 0].long()[None] + steps) % size  # (4, n)
    rows = ((base[:, 1].long()[None] + steps) % size) * size + groups[None] * (size * size)
    index = (rows[:, None, :] + cols[None, :, :]).reshape(-1)
    weight = (_bspline_weights(frac[:, 1])[:, None, :] * _bspline_weights(frac[:, 0])[None, :, :]).reshape(-1)
    grid = torch.zeros(n_groups * size * size, dtype=torch.float32, device=xy.device)
    grid.index_add_(0, index, weight)
    return grid.view(n_groups, size, size)


def band_crop(spectrum: torch.Tensor, size: int) -> torch.Tensor:
    """Keep the rfft2 coefficients of a ``size``^2 grid from the rfft2 of a larger square grid."""
    half = size // 2
    top = spectrum[..., :half, : half + 1]
    bottom = spectrum[..., spectrum.shape[-2] - (size - half) :, : half + 1]
    return torch.cat([top, bottom], dim=-2)


class Projector:
    """Projects one structure, in any orientation, into a square box of ``box`` px at ``pixel_size`` Å.

    Precomputes the per-element Fourier factors (form factor / deposit kernel) once.
    """

    def __init__(
        self,
        structure: Structure,
        box: int,
        pixel_size: float,
        b_factor: float,
        device="cpu",
        solvent: bool = True,
        oversample: int = 2,
    ):
        self.structure = structure
        self.box = box
        self.pixel_size = pixel_size
        self.device = torch.device(device)
        self.fine = box * oversample
        self.fine_pixel = pixel_size / oversample
        self.elements = sorted(structure.coords)
        coords = [torch.as_tensor(structure.coords[e], device=self.device) for e in self.elements]
        self.xyz = torch.cat(coords).double()
        self.groups = torch.cat(
            [torch.full((len(c),), i, device=self.device, dtype=torch.long) for i, c in enumerate(coords)]
        )
        self.factors = self._factors(b_factor, solvent)

    def _factors(self, b_factor: float, solvent: bool) -> torch.Tensor:
        ky = torch.fft.fftfreq(self.box, d=self.pixel_size, device=self.device, dtype=torch.float64)
        kx = torch.fft.rfftfreq(self.box, d=self.pixel_size, device=self.device, dtype=torch.float64)
        k2 = kx[None, :] ** 2 + ky[:, None] ** 2
        # deposit kernel on the fine grid: sinc^4 per axis (torch.sinc is sin(pi x)/(pi x)).
        kernel = (torch.sinc(kx * self.fine_pixel)[None, :] * torch.sinc(ky * self.fine_pixel)[:, None]) ** 4
        out = []
        for el in self.elements:
            f = element_factor(el, self.structure.hydrogens_per_atom(el), k2, b_factor, solvent)
            out.append(f / kernel / self.pixel_size**2)
        factors = torch.stack(out)
        # Drop the Nyquist row and column: a real image cannot carry a sub-pixel shift there,
        # and keeping them makes a checkerboard artifact at coarse pixel sizes.
        factors[:, self.box // 2, :] = 0
        factors[:, :, -1] = 0
        return factors.to(torch.complex64)

    def project_ft(self, rotation: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
        """rfft2 (box x box//2+1) of the projected potential after rotating atoms by ``rotation``
        (3x3, r' = R r) and shifting by ``shift`` = (dx, dy) px; the centre is at pixel box//2."""
        rot = torch.as_tensor(np.asarray(rotation, dtype=np.float64), device=self.device)
        xy = (self.xyz @ rot.T)[:, :2] / self.fine_pixel
        shift_t = torch.as_tensor(shift, dtype=torch.float64, device=self.device)
        xy = xy + (self.fine // 2) + shift_t * (self.fine / self.box)
        grid = _deposit(xy, self.groups, len(self.elements), self.fine)
        spectrum = band_crop(torch.fft.rfft2(grid), self.box)
        return (spectrum * self.factors).sum(0)

    def project(self, rotation: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
        """Projected potential [V Å] sampled at the box's pixel centres (float32, box x box)."""
        return torch.fft.irfft2(self.project_ft(rotation, shift), s=(self.box, self.box))


def projectors_for(structures, acq, device="cpu") -> list["Projector"]:
    """One :class:`Projector` per structure at the acquisition's pixel size and B-factor, each in
    the smallest box that holds the particle in any orientation; InputError when there is none."""
    if not structures:
        from ..errors import InputError

        raise InputError("no structure given: pass at least one PDB/mmCIF file")
    return [Projector(s, box_size_for(s, acq.pixel_size), acq.pixel_size, acq.b_factor, device) for s in structures]


def box_size_for(structure: Structure, pixel_size: float, margin: float = 12.0) -> int:
    """Smallest even, FFT-friendly box (px) that holds the particle in any orientation plus ``margin`` Å."""
    need = int(math.ceil(2 * (structure.radius + margin) / pixel_size))
    return next_fast_size(need + need % 2)


def next_fast_size(n: int) -> int:
    """Smallest even integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    n = max(2, n + n % 2)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 2
