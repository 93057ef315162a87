"""A carbon support film's edge crossing the field: the hole's rim of a holey-carbon grid.

Real micrographs taken near the rim of a hole show the film as a darker region with a bright or
dark Fresnel fringe along its edge, and particles on both sides. A denoiser trained on simulated
fields of one structure in flat ice has never seen that, so the model choice checks that the
edge survives denoising (:mod:`nt2c_core.selection`). Image formation, as for the particles
(weak-phase object, shared design notes):

- the film adds a projected potential ``mean_inner_potential * thickness`` [V Å] over the film,
  with an edge blurred by a Gaussian of ``roughness`` Å (a real rim is not a sharp line); its phase
  goes through the CTF at the micrograph's defocus like the particles' (signal, kept in the clean
  target);
- zero-loss filtering removes the electrons that lost energy in the film: the intensity falls by
  exp(-thickness / ``mean_free_path``) there (signal);
- amorphous carbon has a random phase texture like ice; its power per Å grows with the square of
  the mean inner potential, so it is drawn as ice of (V_carbon / V_ice)^2 times the film's
  thickness over the film (noise, not in the clean target, as the ice texture).

Defaults: a 12 nm film (Quantifoil-like) of 9 V mean inner potential, inelastic mean free path
1600 Å (about half that of ice at 300 kV, carbon being twice as dense), a 1.2 µm hole (R1.2/1.3)
whose rim leaves 15-35 % of the field on the film.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .potential import ICE_MEAN_POTENTIAL


@dataclass(frozen=True)
class CarbonFilm:
    """thickness [Å], mean_inner_potential [V], mean_free_path: inelastic, zero-loss filtered [Å],
    hole_radius [Å], roughness: Gaussian sigma of the edge profile [Å], coverage: range of the
    fraction of the field's shorter side that lies on the film."""

    thickness: float = 120.0
    mean_inner_potential: float = 9.0
    mean_free_path: float = 1600.0
    hole_radius: float = 6000.0
    roughness: float = 20.0
    coverage: tuple[float, float] = (0.15, 0.35)


@dataclass(frozen=True)
class HoleEdge:
    """Where the rim lies, in micrograph pixels: the hole's centre (may be far outside the field)
    and radius; the film is outside the circle."""

    cx: float
    cy: float
    radius: float

    def distance(self, height: int, width: int, origin: int = 0) -> np.ndarray:
        """Signed distance [px] of every pixel to the rim, positive on the film; ``origin`` px of
        margin around the micrograph (the simulator's padded field)."""
        yy, xx = np.ogrid[:height, :width]  # broadcast: one full-size array, not three (4096² fields)
        return np.hypot(xx - origin - self.cx, yy - origin - self.cy) - self.radius


def draw_edge(film: CarbonFilm, width: int, height: int, pixel_size: float, rng: np.random.Generator) -> HoleEdge:
    """A rim crossing the field at a random angle, ``film.coverage`` of the shorter side on the film."""
    angle = rng.uniform(0.0, 2 * math.pi)
    side = min(width, height)
    offset = (0.5 - rng.uniform(*film.coverage)) * side  # the rim's distance from the centre, towards the film
    radius = film.hole_radius / pixel_size
    ux, uy = math.cos(angle), math.sin(angle)
    return HoleEdge(width / 2 + ux * (offset - radius), height / 2 + uy * (offset - radius), radius)


def film_fraction(
    edge: HoleEdge, shape: tuple[int, int], origin: int, film: CarbonFilm, pixel_size: float
) -> np.ndarray:
    """Fraction of each pixel's column covered by film (0 in the hole, 1 on the film), the rim
    blurred by ``film.roughness``; float32 of ``shape`` (the padded field, micrograph at ``origin``)."""
    distance = edge.distance(*shape, origin=origin) * pixel_size
    from scipy.special import erf

    sigma = max(film.roughness, 1e-3)
    return (0.5 * (1.0 + erf(distance / (math.sqrt(2) * sigma)))).astype(np.float32)


def film_terms(
    fraction: torch.Tensor, film: CarbonFilm, sigma: float, transfer: torch.Tensor, texture_ft: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The film's (contrast spectrum, texture contrast, intensity factor) on the padded field.

    ``fraction``: :func:`film_fraction` as a tensor; ``sigma``: interaction constant [rad/(V Å)];
    ``transfer``: the CTF on the rfft2 grid at the micrograph's defocus; ``texture_ft``: rfft2 of an
    ice-like phase field of the film's equivalent thickness (see the module doc)."""
    shape = tuple(fraction.shape)
    phase = fraction * (sigma * film.mean_inner_potential * film.thickness)
    contrast_ft = torch.fft.rfft2(phase) * (2.0 * transfer)
    texture = torch.fft.irfft2(texture_ft, s=shape) * fraction
    texture = torch.fft.irfft2(torch.fft.rfft2(texture) * (2.0 * transfer), s=shape)
    attenuation = torch.exp(-fraction * (film.thickness / film.mean_free_path))
    return contrast_ft, texture, attenuation


def texture_thickness(film: CarbonFilm) -> float:
    """Thickness [Å] of ice with the same phase-texture power as the film."""
    return film.thickness * (film.mean_inner_potential / ICE_MEAN_POTENTIAL) ** 2
