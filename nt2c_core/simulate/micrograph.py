"""Whole micrographs: particles in ice, per-particle defocus, CTF, detector, shot noise.

Image formation (weak-phase object, shared design notes): phase = sigma * V_z; the image
contrast is 2 IFT{Phase(k) CTF(k)}, computed per defocus slab of the ice so each particle is
imaged at the defocus of its depth; intensity I = 1 + contrast. Outputs, in electrons per pixel:
``clean`` = dose px^2 * MTF(I) (noiseless, flat solvent: NT2C's training target) and ``noisy`` =
the detector's noisy counts of I plus an amorphous-ice phase texture, whose expectation over noise
and ice is exactly ``clean``. With ``SimulationConfig.ice_gradient`` the ice thickness varies
across the micrograph (:func:`through_uneven_ice`); ``clean`` stays the flat-solvent target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..settings import MAX_PIXELS, MAX_SIDE, SimulationConfig  # noqa: F401 (re-exported)
from .carbon import CarbonFilm, HoleEdge, draw_edge, film_fraction, film_terms, texture_thickness
from .detector import apply_detector, ice_phase_ft, mtf_filter
from .geometry import matrix_to_euler, place_particles, random_rotations
from .optics import Acquisition, CTFGrid, interaction_constant  # noqa: F401 (Acquisition re-exported)
from .potential import next_fast_size, projectors_for
from .structure import Structure

INELASTIC_MEAN_FREE_PATH = 3500.0  # Å at 300 kV, zero-loss filtered
ICE_GRADIENT_SEED = 7919  # the ramp's own random stream: the micrograph's other draws do not change with it


def thickness_ramp(shape: tuple[int, int], amplitude: float, direction: float) -> np.ndarray:
    """Relative ice-thickness change dt over an H x W field: a linear ramp along ``direction``
    [rad], 0 at the centre and +-``amplitude`` at the edges of the longer side."""
    height, width = shape
    x = (np.arange(width, dtype=np.float32) - width / 2)[None, :] * np.float32(math.cos(direction))
    y = (np.arange(height, dtype=np.float32) - height / 2)[:, None] * np.float32(math.sin(direction))
    return (x + y) * np.float32(amplitude / (max(width, height) / 2))


def through_uneven_ice(signal: torch.Tensor, ice: torch.Tensor, dt: np.ndarray, ice_thickness: float) -> torch.Tensor:
    """Relative intensity where the ice thickness is ``ice_thickness`` [Å] x (1 + dt): the ice
    texture's variance follows the local thickness (its contrast scales with sqrt(1 + dt)) and the
    intensity falls as exp(-dt ice_thickness / 3500 Å), the inelastic losses an energy filter removes."""
    dt_ = torch.from_numpy(dt).to(signal.device)
    return (signal + ice * torch.sqrt(torch.clamp(1.0 + dt_, min=0.05))) * ice_attenuation(dt_, ice_thickness)


def ice_attenuation(dt: torch.Tensor, ice_thickness: float) -> torch.Tensor:
    """Relative intensity exp(-dt ice_thickness / 3500 Å) left where the ice is ``dt`` (relative)
    thicker than ``ice_thickness`` [Å]: the inelastic losses an energy filter removes."""
    return torch.exp(-dt * (ice_thickness / INELASTIC_MEAN_FREE_PATH))


def noiseless_image(intensity: torch.Tensor, acq: Acquisition) -> torch.Tensor:
    """What the detector records of a relative ``intensity`` (H x W) without noise, in e/px:
    dose [e/Å²] x pixel size [Å]² x MTF(intensity)."""
    height, width = intensity.shape
    filtered = mtf_filter(torch.fft.rfft2(intensity), (height, width), acq.detector, acq.image_filter)
    return torch.fft.irfft2(filtered, s=(height, width)) * (acq.dose * acq.pixel_size**2)


OVERFILL = 2  # asking for more than this many times what fits is refused (placement tries grow with the count)


def max_particles(width: int, height: int, radius_px: float) -> int:
    """The most non-overlapping particles of ``radius_px`` [px] that fit in ``width`` x ``height``
    px at least a radius from the edges: hexagonal packing, the densest there is (random placement
    stops near 55 % of it, and the simulator warns and records how many it placed)."""
    d = 2.0 * radius_px
    inner_w, inner_h = width - d, height - d
    if inner_w < 0 or inner_h < 0:
        return 0
    return int((inner_w / d + 1) * (inner_h / (d * math.sqrt(3) / 2) + 1)) + 1


@dataclass
class SimulatedMicrograph:
    """One simulated micrograph: ``clean`` and ``noisy`` in e/px (float32, H x W) and its particles."""

    clean: np.ndarray
    noisy: np.ndarray
    particles: list[dict]
    defocus_u: float
    defocus_v: float
    astigmatism_angle: float
    edge: HoleEdge | None = None

    def pixel_snr(self) -> float:
        """var(clean) / var(noisy - clean): the per-pixel SNR of this micrograph."""
        signal = float(self.clean.var())
        noise = float((self.noisy - self.clean).var())
        return signal / noise if noise > 0 else math.inf


@dataclass
class ImageTerms:
    """Relative intensity terms of one micrograph before the detector (see ``image_terms``)."""

    signal: torch.Tensor
    ice: torch.Tensor
    particles: list[dict]
    defocus_u: float
    defocus_v: float
    astigmatism_angle: float
    noise_rng: np.random.Generator
    edge: HoleEdge | None = None


class MicrographSimulator:
    """Simulates micrographs of given structures; projectors (and libraries) are built once.

    ``aggregate``: in every micrograph, up to this many particles of the kinds ``aggregate_kinds``
    (indices into ``structures``; default all) are pulled into one touching cluster (centres 1.5
    radii apart around the first of them), as aggregates on real grids; particles that would
    overlap it are left out, members are marked ``aggregate``. 0 (the default): none.
    ``carbon``: a carbon film's rim crosses every micrograph (:mod:`.carbon`; its film in the clean
    target, its texture in the noise); None (the default): the default film in the fraction
    ``config.carbon_fraction`` of them (none by default). With either option the other
    random draws of a micrograph do not change."""

    def __init__(
        self,
        structures: list[Structure],
        config: SimulationConfig,
        device="cpu",
        aggregate: int = 0,
        aggregate_kinds: Sequence[int] | None = None,
        carbon: CarbonFilm | None = None,
    ):
        self.config = config.validate()
        self.structures = structures
        self.device = torch.device(device)
        self.aggregate = int(aggregate)
        self.aggregate_kinds = set(range(len(structures)) if aggregate_kinds is None else aggregate_kinds)
        self.carbon = carbon
        acq = config.acquisition
        self.radius_px = max(s.radius for s in structures) / acq.pixel_size
        width, height = config.size
        if min(width, height) < 2 * self.radius_px:
            raise InputError(
                f"micrograph size {width} x {height} px is too small for one particle "
                f"of diameter {2 * self.radius_px:.0f} px at {acq.pixel_size} Å/px"
            )
        most = max_particles(width, height, self.radius_px)
        if config.particles_per_micrograph() > OVERFILL * most:  # up to that: placed as they fit, with a warning
            flag = "--particles" if config.concentration is None else "--concentration"
            asked = config.particles if config.concentration is None else config.concentration
            raise InputError(
                f"{flag} = {asked:g}: asks for {config.particles_per_micrograph()} particles per "
                f"micrograph, but at most about {most} of diameter {2 * self.radius_px:.0f} px fit in "
                f"{width} x {height} px without overlapping; ask for at most {OVERFILL * most}"
            )
        self.projectors = projectors_for(structures, acq, self.device)
        self.libraries = [self._library(i) for i in range(len(structures))] if config.library_size else None

    def _library(self, index: int) -> tuple[np.ndarray, torch.Tensor]:
        rng = np.random.default_rng([self.config.seed, 7919, index])
        rotations = random_rotations(self.config.library_size, rng)
        projector = self.projectors[index]
        spectra = torch.stack([projector.project_ft(r) for r in rotations])
        return rotations, spectra

    def _particle_box(self, kind: int, rotation_or_view, shift: np.ndarray) -> torch.Tensor:
        projector = self.projectors[kind]
        if self.libraries is None:
            return projector.project(rotation_or_view, tuple(shift))
        spectrum = self.libraries[kind][1][rotation_or_view]
        box = projector.box
        ky = torch.fft.fftfreq(box, device=self.device)[:, None]
        kx = torch.fft.rfftfreq(box, device=self.device)[None, :]
        ramp = torch.exp(-2j * math.pi * (kx * float(shift[0]) + ky * float(shift[1])))
        return torch.fft.irfft2(spectrum * ramp, s=(box, box))

    def simulate(self, index: int, noise_draw: int = 0) -> SimulatedMicrograph:
        """Micrograph number ``index``. The specimen (particles, defocus) depends on (seed, index)
        alone; ice and shot noise also on ``noise_draw``, so one specimen can be re-imaged."""
        terms = self.image_terms(index, noise_draw)
        acq = self.config.acquisition
        height, width = terms.signal.shape
        intensity = terms.signal + terms.ice
        if self.config.ice_gradient > 0:
            ramp_rng = np.random.default_rng([self.config.seed, index, ICE_GRADIENT_SEED])
            amplitude = ramp_rng.uniform(0.0, self.config.ice_gradient)
            dt = thickness_ramp((height, width), amplitude, ramp_rng.uniform(0.0, 2 * math.pi))
            intensity = through_uneven_ice(terms.signal, terms.ice, dt, self.config.ice_thickness)
        clean = noiseless_image(terms.signal, acq)
        noisy = apply_detector(intensity, acq, terms.noise_rng)
        return SimulatedMicrograph(
            clean.cpu().numpy().astype(np.float32),
            noisy.cpu().numpy().astype(np.float32),
            terms.particles,
            terms.defocus_u,
            terms.defocus_v,
            terms.astigmatism_angle,
            terms.edge,
        )

    def image_terms(self, index: int, noise_draw: int = 0) -> "ImageTerms":
        """The relative intensity before the detector: ``signal`` (1 + particle contrast) and the
        ice texture's contrast ``ice`` (H x W tensors), plus the noise generator to continue with."""
        cfg, acq = self.config, self.config.acquisition
        rng = np.random.default_rng([cfg.seed, index])
        noise_rng = np.random.default_rng([cfg.seed, index, 1 + noise_draw])
        width, height = cfg.size
        df = rng.uniform(*cfg.defocus_um) * 1e4
        astig_angle = rng.uniform(0.0, math.pi)
        df_u, df_v = df + cfg.astigmatism_um * 5e3, df - cfg.astigmatism_um * 5e3
        particles = self._draw_particles(rng, width, height, df_u, df_v, astig_angle)
        shape = (next_fast_size(height + 2 * cfg.pad), next_fast_size(width + 2 * cfg.pad))
        ctf_grid = CTFGrid(shape, acq, envelope_defocus=df, device=self.device)
        contrast_ft = self._signal_contrast_ft(particles, ctf_grid, shape)
        ice_ft = ice_phase_ft(shape, acq.pixel_size, cfg.ice_thickness, noise_rng, self.device)
        transfer = ctf_grid(df_u, df_v, astig_angle)
        ice_ft = ice_ft * (2.0 * transfer)
        crop = (slice(cfg.pad, cfg.pad + height), slice(cfg.pad, cfg.pad + width))
        edge, film_texture, attenuation = None, 0.0, 1.0
        film_rng = np.random.default_rng([cfg.seed, index, 104729])
        if film_rng.uniform() < (1.0 if self.carbon is not None else cfg.carbon_fraction):
            edge, film_ft, film_texture, attenuation = self._film(film_rng, index, noise_draw, shape, transfer)
            contrast_ft = contrast_ft + film_ft
        signal = (1.0 + torch.fft.irfft2(contrast_ft, s=shape)) * attenuation
        ice = (torch.fft.irfft2(ice_ft, s=shape) + film_texture) * attenuation
        for p in particles:
            p.pop("_rotation")
        return ImageTerms(signal[crop], ice[crop], particles, df_u, df_v, astig_angle, noise_rng, edge)

    def _film(
        self, rng: np.random.Generator, index: int, noise_draw: int, shape: tuple[int, int], transfer: torch.Tensor
    ):
        """(rim, film contrast spectrum, texture contrast, intensity factor) of micrograph ``index``
        on the padded field; the rim drawn with ``rng``, the texture with its own generator."""
        cfg, acq, film = self.config, self.config.acquisition, self.carbon or CarbonFilm()
        width, height = cfg.size
        edge = draw_edge(film, width, height, acq.pixel_size, rng)
        fraction = torch.from_numpy(film_fraction(edge, shape, cfg.pad, film, acq.pixel_size)).to(self.device)
        texture_rng = np.random.default_rng([cfg.seed, index, 104729, 1 + noise_draw])
        texture_ft = ice_phase_ft(shape, acq.pixel_size, texture_thickness(film), texture_rng, self.device)
        return (edge, *film_terms(fraction, film, interaction_constant(acq.voltage), transfer, texture_ft))

    def _draw_particles(self, rng, width, height, df_u, df_v, astig_angle) -> list[dict]:
        cfg = self.config
        n = cfg.particles_per_micrograph()
        centres = place_particles(n, width, height, 2 * self.radius_px, self.radius_px, rng)
        kinds = rng.integers(0, len(self.structures), len(centres))
        if self.libraries is None:
            views = random_rotations(len(centres), rng)
        else:
            views = rng.integers(0, cfg.library_size, len(centres))
        particles = []
        for (x, y), kind, view in zip(centres, kinds, views):
            radius = self.structures[kind].radius
            room = max(0.0, cfg.ice_thickness / 2 - radius)
            z = rng.uniform(-room, room)
            slab = int((z + cfg.ice_thickness / 2) // cfg.slab_thickness)
            slab_z = (slab + 0.5) * cfg.slab_thickness - cfg.ice_thickness / 2
            rotation = view if self.libraries is None else self.libraries[kind][0][view]
            rot, tilt, psi = matrix_to_euler(rotation)
            particles.append(
                dict(
                    x=float(x),
                    y=float(y),
                    kind=int(kind),
                    z=float(z),
                    slab=slab,
                    rot=rot,
                    tilt=tilt,
                    psi=psi,
                    defocus_u=df_u + slab_z,
                    defocus_v=df_v + slab_z,
                    defocus_angle=math.degrees(astig_angle),
                    _rotation=view,
                )
            )
        return self._cluster(particles, rng, width, height) if self.aggregate else particles

    def _cluster(self, particles: list[dict], rng, width: int, height: int) -> list[dict]:
        """``particles`` with an aggregate (see the class doc); unchanged when fewer than 3 of the
        aggregate kinds were placed or the field is narrower than 5 radii."""
        known = [p for p in particles if p["kind"] in self.aggregate_kinds]
        r = self.radius_px
        if len(known) < 3 or min(width, height) < 5 * r:
            return particles
        cx = float(np.clip(known[0]["x"], 2.5 * r, width - 2.5 * r))
        cy = float(np.clip(known[0]["y"], 2.5 * r, height - 2.5 * r))
        members = known[: self.aggregate]
        for j, p in enumerate(members):  # the centre, then a ring of up to 6 at 1.5 radii
            angle = 2 * np.pi * (j - 1) / 6 + rng.uniform(-0.2, 0.2)
            p["x"], p["y"] = (cx, cy) if j == 0 else (cx + 1.5 * r * np.cos(angle), cy + 1.5 * r * np.sin(angle))
            p["aggregate"] = True
        spots = np.array([(p["x"], p["y"]) for p in members])
        taken = {id(p) for p in members}
        return members + [
            p for p in particles if id(p) not in taken and np.hypot(*(spots - (p["x"], p["y"])).T).min() >= 2 * r
        ]

    def _signal_contrast_ft(self, particles: list[dict], ctf_grid: CTFGrid, shape: tuple[int, int]) -> torch.Tensor:
        """Sum over defocus slabs of 2 * sigma * FT(projected potential) * CTF(slab defocus)."""
        acq, pad = self.config.acquisition, self.config.pad
        sigma = interaction_constant(acq.voltage)
        total = torch.zeros((shape[0], shape[1] // 2 + 1), dtype=torch.complex64, device=self.device)
        for slab in sorted({p["slab"] for p in particles}):
            members = [p for p in particles if p["slab"] == slab]
            field_ = torch.zeros(shape, dtype=torch.float32, device=self.device)
            for p in members:
                ix, iy = round(p["x"]), round(p["y"])
                box = self._particle_box(p["kind"], p["_rotation"], np.array([p["x"] - ix, p["y"] - iy]))
                _paste(field_, box, iy + pad, ix + pad)
            p0 = members[0]
            transfer = ctf_grid(p0["defocus_u"], p0["defocus_v"], math.radians(p0["defocus_angle"]))
            total += torch.fft.rfft2(field_) * (2.0 * sigma * transfer)
        return total


def _paste(field_: torch.Tensor, box: torch.Tensor, cy: int, cx: int) -> None:
    """Add ``box`` into ``field_`` with the box's pixel (n//2, n//2) at (cy, cx), clipped."""
    n = box.shape[0]
    y0, x0 = cy - n // 2, cx - n // 2
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(field_.shape[0], y0 + n), min(field_.shape[1], x0 + n)
    if ye > ys and xe > xs:
        field_[ys:ye, xs:xe] += box[ys - y0 : ye - y0, xs - x0 : xe - x0]
