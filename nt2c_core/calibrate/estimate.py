"""Per-micrograph estimates and their combination into the simulation's settings, with notes
where a value fell back to the given one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from ..simulate import Acquisition, SimulationConfig
from ..simulate.detector import DETECTORS, ice_amplitude
from ..spectra import contrast, welch
from .defocus import DEFOCUS_GRID_UM, check_rings, fit_defocus
from .noise import PLAUSIBLE_DOSE, fit_noise, not_counts


@dataclass
class MicrographEstimate:
    """What one micrograph told us. Defocus [Å, positive = underfocus], angle [rad]; dose
    [e/Å^2]; gain [file units per electron]; ice [Å]; image_filter: beta of the recorded image's
    low-pass exp(-beta f^2), f in cycles/px; ring_score: correlation of the fitted rings
    (None when no fit ran); notes: what could not be estimated and why."""

    name: str
    defocus_u: float | None = None
    defocus_v: float | None = None
    astigmatism_angle: float | None = None
    ring_score: float | None = None
    dose: float | None = None
    gain: float | None = None
    ice_thickness: float | None = None
    image_filter: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def defocus(self) -> float | None:
        return None if self.defocus_u is None else 0.5 * (self.defocus_u + self.defocus_v)


# --- defocus ------------------------------------------------------------------------------------


def estimate_micrograph(
    image: np.ndarray,
    acq: Acquisition,
    name: str = "image",
    counting: bool = True,
    known_defocus: tuple[float, float, float] | None = None,
) -> MicrographEstimate:
    """Estimate defocus/astigmatism, dose, gain and ice thickness of one micrograph (counts)."""
    out = MicrographEstimate(name)
    mean = float(np.mean(image))
    relative = contrast(image, name)
    spectrum = welch([relative], acq.pixel_size)
    halves = [welch([half], acq.pixel_size) for half in split_halves(relative)]
    if known_defocus is not None:
        out.defocus_u, out.defocus_v, out.astigmatism_angle = known_defocus
        out.notes.append("defocus: known values accepted")
    else:
        df_u, df_v, angle, score = fit_defocus(spectrum, acq)
        rings = check_rings(halves, acq)
        out.ring_score = round(score, 3)
        if not rings.passed(score):
            out.notes.append(
                f"defocus: no Thon rings found (ring score {score:.2f}, noise alone "
                f"{rings.null_score:.2f}; the two halves of the micrograph fit "
                f"{rings.defoci[0] / 1e4:.2f} and {rings.defoci[1] / 1e4:.2f} µm); not estimated "
                "(if rings are visible, check the pixel size)"
            )
        elif not DEFOCUS_GRID_UM[0] * 1e4 < 0.5 * (df_u + df_v) < DEFOCUS_GRID_UM[1] * 1e4:
            out.notes.append(f"defocus: fit ran to the edge of {DEFOCUS_GRID_UM} µm; check the pixel size")
        else:
            out.defocus_u, out.defocus_v, out.astigmatism_angle = df_u, df_v, angle
    if out.defocus_u is None:
        return out
    if not counting:
        out.notes.append("dose: the detector does not count electrons; the shot-noise level does not give the dose")
        return out
    noise = fit_noise(spectrum, acq, out.defocus_u, out.defocus_v, out.astigmatism_angle)
    if noise["shot"] <= 0:
        out.notes.append("dose: no shot-noise floor found in the spectrum; not estimated")
        return out
    electrons = 1.0 / (noise["shot"] * DETECTORS[acq.detector].dqe0)
    dose = electrons / acq.pixel_size**2
    if not PLAUSIBLE_DOSE[0] <= dose <= PLAUSIBLE_DOSE[1]:
        out.notes.append(
            f"dose: {dose:.3g} e/Å² at {acq.pixel_size} Å/px is implausible (expected "
            f"{PLAUSIBLE_DOSE[0]:g}-{PLAUSIBLE_DOSE[1]:g}); check the pixel size and that the "
            "detector counts electrons (or its noise spectrum differs from the "
            f"{acq.detector} model)"
        )
        return out
    out.dose, out.gain = dose, mean / electrons
    out.ice_thickness = noise["ice"] * acq.pixel_size**2 / ice_amplitude()
    out.image_filter = noise["image_filter"]
    return out


def split_halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom halves (left and right when the image is wider than tall)."""
    h, w = image.shape
    if w > h:
        return image[:, : w // 2], image[:, w // 2 :]
    return image[: h // 2], image[h // 2 :]


@dataclass
class Calibration:
    """The calibrated simulation settings, the per-micrograph estimates, and notes on fallbacks."""

    simulation: SimulationConfig
    estimates: list[MicrographEstimate]
    notes: list[str]

    def to_dict(self) -> dict:
        return {
            "simulation": self.simulation.to_dict(),
            "notes": self.notes,
            "micrographs": [e.__dict__ for e in self.estimates],
        }


def calibrate(
    images: Sequence[tuple[str, np.ndarray]],
    base: SimulationConfig,
    counting: bool = True,
    known_defocus: tuple[float, float, float] | None = None,
    dose_given: bool = True,
) -> Calibration:
    """Calibrate ``base`` (whose acquisition holds what the user knows) to the micrographs.

    Replaced: dose (median estimate), defocus range (min-max of the estimates), astigmatism
    (median), ice thickness (median). A median estimate of dose more than 2x off a dose the user
    gave (``dose_given``) is not trusted: the given dose is kept, with a note."""
    acq = base.acquisition
    exported = [(name, why) for name, why in ((name, not_counts(x)) for name, x in images) if why]
    if exported and counting:
        counting = False  # the noise level of an export says nothing about the dose
    estimates = [estimate_micrograph(x, acq, name, counting, known_defocus) for name, x in images]
    notes = [
        f"{name}: {why}: not detector counts, so dose, gain and ice cannot be read from the noise; the "
        "given values are kept"
        for name, why in exported
    ]
    notes += [f"{e.name}: {n}" for e in estimates for n in e.notes]
    sim = replace(base, acquisition=replace(acq))
    defoci = [e.defocus for e in estimates if e.defocus is not None]
    if defoci:
        sim.defocus_um = (round(min(defoci) / 1e4, 4), round(max(defoci) / 1e4, 4))
        sim.astigmatism_um = round(
            float(np.median([abs(e.defocus_u - e.defocus_v) for e in estimates if e.defocus is not None])) / 1e4, 4
        )
    else:
        notes.append(f"defocus: no micrograph gave an estimate; kept {base.defocus_um} µm")
    doses = [e.dose for e in estimates if e.dose is not None]
    if doses:
        dose = float(np.median(doses))
        if dose_given and not 0.5 <= dose / acq.dose <= 2.0:
            notes.append(
                f"dose: estimated {dose:.1f} e/Å² is more than 2x off the given {acq.dose} e/Å²; kept the "
                "given dose (check the pixel size: the estimate scales with its inverse square)"
            )
        else:
            sim.acquisition.dose = round(dose, 2)
            sim.acquisition.image_filter = float(np.median([e.image_filter for e in estimates if e.dose is not None]))
        sim.ice_thickness = round(float(np.median([e.ice_thickness for e in estimates if e.dose is not None])), 1)
    else:
        notes.append(f"dose: no micrograph gave an estimate; kept {acq.dose} e/Å²")
    return Calibration(sim.validate(), estimates, notes)


# --- how close simulation gets -----------------------------------------------------------------
