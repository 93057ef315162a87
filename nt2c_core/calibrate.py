"""Calibrate the simulator to real micrographs (SaID's point 1): estimate from the micrographs
themselves what the simulation must reproduce, and measure how close calibrated simulation gets.

Per micrograph (all from the Welch power spectrum of the contrast image ``x/mean - 1``):
- defocus and astigmatism: the CTF^2 ring pattern is fitted to the spectrum in 1-D (grid search
  over defocus, correlating ring modulations after removing a smooth background) then refined in
  2-D (mean defocus, astigmatism, angle). Rings too weak to be significant -> no estimate.
- dose and gain: above 0.25 Nyquist, the radial spectrum is fitted (non-negative least squares) as
  a*NNPS(f) + b*ice(k) + c*signal(k), where NNPS is the detector's noise shape, ice the amorphous
  ice spectrum through the fitted CTF and MTF, signal a B-factor-damped protein spectrum through the
  same, everything through an image low-pass exp(-beta f^2) whose beta is fitted too (real EPU
  images fall off far more than any detector noise model). For a counting detector the shot-noise level a = 1 / (N DQE0), N = electrons per pixel, so
  dose = N / pixel_size^2 and gain = mean value / N (EPU-scaled integers, say). b gives the ice
  thickness.

What could not be estimated (no Thon rings, a non-counting detector, a dose that cannot be right
for the stated pixel size) falls back to the given value, with the reason in ``notes``: never
silently to nonsense.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import minimize, nnls

from .errors import InputError
from .io import atomic_write, read_mrc, write_json
from .simulate import Acquisition, SimulationConfig
from .simulate.detector import DETECTORS, ICE_PEAK_FREQUENCY, ice_amplitude
from .simulate.optics import ctf_at
from .spectra import Spectrum, contrast, log_distance, radial_power, welch

DEFOCUS_GRID_UM = (0.2, 8.0)
PLAUSIBLE_DOSE = (5.0, 200.0)
MIN_RING_SCORE = 0.2  # correlation of the fitted rings with the spectrum
RING_AGREEMENT = 0.05  # two halves of the data must agree on the defocus within 5 %
RING_MARGIN = 0.2  # and the ring score must beat the halves' difference (noise only) by this
COMPARE_K_MIN = 0.01  # 1/Å: spectra are compared from 100 Å down to Nyquist
BETA_GRID = np.arange(0.0, 40.01, 0.5)  # image filter exp(-beta f^2) candidates
SIGNAL_B_FACTOR = 60.0  # Å^2, power ~ exp(-B k^2 / 2): image B-factor plus atomic form factors


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


def fit_defocus(spectrum: Spectrum, acq: Acquisition) -> tuple[float, float, float, float]:
    """(defocus_u, defocus_v [Å], astigmatism angle [rad], ring score) fitted to the spectrum;
    the score is the correlation of the radially averaged ring modulation with the fitted CTF^2."""
    k_lo, k_hi = _ring_band(spectrum)
    kx, ky = spectrum.kxy()
    band = (spectrum.k >= k_lo) & (spectrum.k <= k_hi)
    rel = _ring_modulation(spectrum, k_lo, k_hi)
    kxb, kyb, relb = kx[band], ky[band], rel[band]
    best, _ = _grid_search(*_radial_of(spectrum, rel, band), acq)  # the modulation computed above

    def cost(p):
        mean, half, angle = p
        return -_corr(relb, _ctf2(kxb, kyb, acq, mean + half, mean - half, angle))

    starts = [(best, 100.0, a) for a in (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)]
    fits = [minimize(cost, s, method="Nelder-Mead", options=dict(xatol=1.0, fatol=1e-5, maxiter=400)) for s in starts]
    mean, half, angle = min(fits, key=lambda r: r.fun).x
    if half < 0:
        half, angle = -half, angle + math.pi / 2
    model = np.zeros_like(rel)
    model[band] = _ctf2(kxb, kyb, acq, mean + half, mean - half, angle)
    kr, prof = _radial_of(spectrum, rel, band)
    score = float(_residual(kr, _radial_of(spectrum, model, band)[1][None])[0] @ _residual(kr, prof[None])[0])
    return mean + half, mean - half, float(angle % math.pi), float(score)


def grid_defocus(spectrum: Spectrum, acq: Acquisition) -> tuple[float, float]:
    """(defocus [Å], correlation): 1-D search, 5 nm steps over DEFOCUS_GRID_UM, of the radially
    averaged ring modulation against an astigmatism-free CTF^2."""
    return _grid_search(*_ring_profile(spectrum), acq)


def _ring_profile(spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    k_lo, k_hi = _ring_band(spectrum)
    band = (spectrum.k >= k_lo) & (spectrum.k <= k_hi)
    return _radial_of(spectrum, _ring_modulation(spectrum, k_lo, k_hi), band)


def _grid_search(kr: np.ndarray, prof: np.ndarray, acq: Acquisition) -> tuple[float, float]:
    grid = np.arange(DEFOCUS_GRID_UM[0], DEFOCUS_GRID_UM[1], 0.005) * 1e4
    models = _residual(kr, np.stack([_ctf2(kr, 0 * kr, acq, d, d, 0.0) for d in grid]))
    scores = models @ _residual(kr, prof[None])[0]
    i = int(np.argmax(scores))
    return float(grid[i]), float(scores[i])


@dataclass
class RingCheck:
    """Are the rings real? Each half of the data is fitted alone (``defoci``, Å): real rings agree
    within RING_AGREEMENT. ``null_score``: the best ring score of the difference of the halves'
    ring profiles, where real rings cancel and only the noise's chance matches stay."""

    defoci: list[float]
    null_score: float

    def passed(self, score: float) -> bool:
        d1, d2 = self.defoci
        agree = abs(d1 - d2) <= RING_AGREEMENT * 0.5 * (d1 + d2)
        return agree and score >= MIN_RING_SCORE and score >= self.null_score + RING_MARGIN


def check_rings(halves: Sequence[Spectrum], acq: Acquisition) -> RingCheck:
    """Fit the two halves alone and the difference of their ring profiles (see :class:`RingCheck`)."""
    (k1, p1), (_, p2) = (_ring_profile(h) for h in halves)
    defoci = [_grid_search(k1, p, acq)[0] for p in (p1, p2)]
    return RingCheck(defoci, _grid_search(k1, p1 - p2, acq)[1])


def _ring_band(spectrum: Spectrum) -> tuple[float, float]:
    """Rings are fitted from 1/40 Å^-1 to the ice ring region or 0.9 Nyquist, whichever is lower."""
    return 1 / 40.0, min(0.9 * spectrum.nyquist, 1.05 * ICE_PEAK_FREQUENCY)


def _ring_modulation(spectrum: Spectrum, k_lo: float, k_hi: float) -> np.ndarray:
    """power / smooth background - 1: the background is a degree-6 polynomial in k fitted to the
    log of the radial profile over the band."""
    k, p = spectrum.radial()
    sel = (k >= k_lo * 0.8) & (k <= k_hi * 1.05) & (p > 0)
    coef = np.polynomial.polynomial.polyfit(k[sel], np.log(p[sel]), 6)
    background = np.exp(np.polynomial.polynomial.polyval(np.clip(spectrum.k, k[sel][0], k[sel][-1]), coef))
    return spectrum.power / background - 1.0


def _radial_of(spectrum: Spectrum, values: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k, v = spectrum.radial(np.where(band, values, 0.0))
    kb, nb = spectrum.radial(band.astype(float))
    keep = nb > 0.99
    return k[keep], v[keep]


def _residual(k: np.ndarray, rows: np.ndarray, degree: int = 6) -> np.ndarray:
    """Rows with their smooth part (a degree-``degree`` polynomial in k) removed, scaled to unit
    norm: correlations of such rows are partial correlations given a smooth background, so a
    model is not rewarded for matching slow trends of the spectrum."""
    t = (k - k.mean()) / max(np.ptp(k), 1e-30)
    basis, _ = np.linalg.qr(np.vander(t, degree + 1))
    out = rows - (rows @ basis) @ basis.T
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)


def _ctf2(kx: np.ndarray, ky: np.ndarray, acq: Acquisition, df_u: float, df_v: float, angle: float,
          envelope: bool = False) -> np.ndarray:
    value = ctf_at(torch.from_numpy(np.ascontiguousarray(kx, dtype=np.float64)),
                   torch.from_numpy(np.ascontiguousarray(ky, dtype=np.float64)), acq, df_u, df_v, angle, envelope)
    return value.numpy() ** 2


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


# --- dose, gain, ice ---------------------------------------------------------------------------


def fit_noise(spectrum: Spectrum, acq: Acquisition, df_u: float, df_v: float, angle: float) -> dict:
    """Non-negative fit of the radial spectrum above 0.25 Nyquist: shot-noise level (contrast^2 per
    pixel at zero frequency), ice and signal weights, all through the image filter exp(-beta f^2)
    whose beta (0-40, f in cycles/px) fits best. Returns the four and the relative residual."""
    det = DETECTORS[acq.detector]
    kx, ky = spectrum.kxy()
    f = torch.from_numpy(spectrum.k * acq.pixel_size)
    mtf2 = det.mtf(f).numpy() ** 2
    ctf2 = _ctf2(kx, ky, acq, df_u, df_v, angle, envelope=True)
    q2 = (spectrum.k / ICE_PEAK_FREQUENCY) ** 2
    terms = [det.nnps(f).numpy(), 4 * ctf2 * mtf2 * q2 * np.exp(1 - q2),
             ctf2 * mtf2 * np.exp(-0.5 * SIGNAL_B_FACTOR * spectrum.k ** 2)]
    k, p = spectrum.radial()
    design = np.stack([spectrum.radial(t)[1] for t in terms], axis=1)
    sel = (k >= 0.25 * spectrum.nyquist) & (k <= 0.95 * spectrum.nyquist)
    f2 = (k[sel] * acq.pixel_size) ** 2
    best = None
    for beta in BETA_GRID:
        x = design[sel] * np.exp(-2 * beta * f2)[:, None] / p[sel, None]  # relative residuals
        coef, _ = nnls(x, np.ones(int(sel.sum())))
        residual = float(np.sqrt(np.mean((x @ coef - 1) ** 2)))
        if best is None or residual < best["residual"] - 1e-4:
            best = {"shot": float(coef[0]), "ice": float(coef[1]), "signal": float(coef[2]),
                    "image_filter": float(beta), "residual": residual}
    return best


# --- per micrograph and per data set -----------------------------------------------------------


def estimate_micrograph(image: np.ndarray, acq: Acquisition, name: str = "image", counting: bool = True,
                        known_defocus: tuple[float, float, float] | None = None) -> MicrographEstimate:
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
            out.notes.append(f"defocus: no Thon rings found (ring score {score:.2f}, noise alone "
                             f"{rings.null_score:.2f}; the two halves of the micrograph fit "
                             f"{rings.defoci[0] / 1e4:.2f} and {rings.defoci[1] / 1e4:.2f} µm); not estimated "
                             "(if rings are visible, check the pixel size)")
        elif not DEFOCUS_GRID_UM[0] * 1e4 < 0.5 * (df_u + df_v) < DEFOCUS_GRID_UM[1] * 1e4:
            out.notes.append(f"defocus: fit ran to the edge of {DEFOCUS_GRID_UM} µm; check the pixel size")
        else:
            out.defocus_u, out.defocus_v, out.astigmatism_angle = df_u, df_v, angle
    if out.defocus_u is None:
        return out
    if not counting:
        out.notes.append("dose: the detector does not count electrons; the shot-noise level does not give the "
                         "dose")
        return out
    noise = fit_noise(spectrum, acq, out.defocus_u, out.defocus_v, out.astigmatism_angle)
    if noise["shot"] <= 0:
        out.notes.append("dose: no shot-noise floor found in the spectrum; not estimated")
        return out
    electrons = 1.0 / (noise["shot"] * DETECTORS[acq.detector].dqe0)
    dose = electrons / acq.pixel_size ** 2
    if not PLAUSIBLE_DOSE[0] <= dose <= PLAUSIBLE_DOSE[1]:
        out.notes.append(f"dose: {dose:.3g} e/Å² at {acq.pixel_size} Å/px is implausible (expected "
                         f"{PLAUSIBLE_DOSE[0]:g}-{PLAUSIBLE_DOSE[1]:g}); check the pixel size and that the "
                         "detector counts electrons (or its noise spectrum differs from the "
                         f"{acq.detector} model)")
        return out
    out.dose, out.gain = dose, mean / electrons
    out.ice_thickness = noise["ice"] * acq.pixel_size ** 2 / ice_amplitude()
    out.image_filter = noise["image_filter"]
    return out


def split_halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom halves (left and right when the image is wider than tall)."""
    h, w = image.shape
    if w > h:
        return image[:, : w // 2], image[:, w // 2:]
    return image[: h // 2], image[h // 2:]


@dataclass
class Calibration:
    """The calibrated simulation settings, the per-micrograph estimates, and notes on fallbacks."""

    simulation: SimulationConfig
    estimates: list[MicrographEstimate]
    notes: list[str]

    def to_dict(self) -> dict:
        return {"simulation": self.simulation.to_dict(), "notes": self.notes,
                "micrographs": [e.__dict__ for e in self.estimates]}


def not_counts(image: np.ndarray) -> str | None:
    """Why an image is not a micrograph in detector counts, or None: an 8-bit export (integers
    spanning most of 0-255: counting data at a dose that low spans far less) or a contrast stretch
    (over 0.5 % of the pixels saturated at the highest value, or piled at a lowest value other
    than 0, which low-dose counts can legitimately reach). Such images keep the Thon rings
    (defocus can be fitted) but not the shot-noise level (dose, gain, ice)."""
    x = np.asarray(image)
    sample = x.ravel()[:: max(1, x.size // 1_000_000)]
    lo, hi = float(sample.min()), float(sample.max())
    levels = np.unique(sample)
    if len(levels) <= 256 and np.allclose(levels, np.round(levels)) and lo >= 0 and hi <= 255 and hi - lo >= 128:
        return f"{len(levels)} grey levels between {lo:g} and {hi:g} (an 8-bit export)"
    top, bottom = float(np.mean(sample == hi)), float(np.mean(sample == lo))
    if top > 0.005:
        return f"{100 * top:.1f} % of the pixels saturated at the highest value {hi:g} (contrast-stretched)"
    if bottom > 0.005 and lo != 0:
        return f"{100 * bottom:.1f} % of the pixels piled at the lowest value {lo:g} (contrast-stretched)"
    return None


def calibrate(images: Sequence[tuple[str, np.ndarray]], base: SimulationConfig, counting: bool = True,
              known_defocus: tuple[float, float, float] | None = None, dose_given: bool = True) -> Calibration:
    """Calibrate ``base`` (whose acquisition holds what the user knows) to the micrographs.

    Replaced: dose (median estimate), defocus range (min-max of the estimates), astigmatism
    (median), ice thickness (median). A median estimate of dose more than 2x off a dose the user
    gave (``dose_given``) is not trusted: the given dose is kept, with a note."""
    acq = base.acquisition
    exported = [(name, why) for name, why in ((name, not_counts(x)) for name, x in images) if why]
    if exported and counting:
        counting = False  # the noise level of an export says nothing about the dose
    estimates = [estimate_micrograph(x, acq, name, counting, known_defocus) for name, x in images]
    notes = [f"{name}: {why}: not detector counts, so dose, gain and ice cannot be read from the noise; the "
             "given values are kept" for name, why in exported]
    notes += [f"{e.name}: {n}" for e in estimates for n in e.notes]
    sim = replace(base, acquisition=replace(acq))
    defoci = [e.defocus for e in estimates if e.defocus is not None]
    if defoci:
        sim.defocus_um = (round(min(defoci) / 1e4, 4), round(max(defoci) / 1e4, 4))
        sim.astigmatism_um = round(float(np.median([abs(e.defocus_u - e.defocus_v) for e in estimates
                                                    if e.defocus is not None])) / 1e4, 4)
    else:
        notes.append(f"defocus: no micrograph gave an estimate; kept {base.defocus_um} µm")
    doses = [e.dose for e in estimates if e.dose is not None]
    if doses:
        dose = float(np.median(doses))
        if dose_given and not 0.5 <= dose / acq.dose <= 2.0:
            notes.append(f"dose: estimated {dose:.1f} e/Å² is more than 2x off the given {acq.dose} e/Å²; kept the "
                         "given dose (check the pixel size: the estimate scales with its inverse square)")
        else:
            sim.acquisition.dose = round(dose, 2)
            sim.acquisition.image_filter = float(np.median([e.image_filter for e in estimates if e.dose is not None]))
        sim.ice_thickness = round(float(np.median([e.ice_thickness for e in estimates if e.dose is not None])), 1)
    else:
        notes.append(f"dose: no micrograph gave an estimate; kept {acq.dose} e/Å²")
    return Calibration(sim.validate(), estimates, notes)


# --- how close simulation gets -----------------------------------------------------------------


def background_tiles(image: np.ndarray, tile: int = 256, fraction: float = 0.25) -> list[np.ndarray]:
    """The ``fraction`` of ``tile``-px tiles with the lowest low-pass (4x-binned) variance: where
    particles are not (they add low-frequency contrast). A fixed rule, the same for every image."""
    h, w = image.shape
    tiles = [image[y:y + tile, x:x + tile] for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]
    if not tiles:
        return [image]
    variances = [t.reshape(tile // 4, 4, tile // 4, 4).mean(axis=(1, 3)).var() for t in tiles]
    keep = max(1, int(round(fraction * len(tiles))))
    return [tiles[i] for i in np.argsort(variances)[:keep]]


def compare_to_simulation(images: Sequence[np.ndarray], config: SimulationConfig, structures: Sequence,
                          size: int = 1024) -> dict:
    """Radially averaged power spectra of the real micrographs (central crops of ``size`` px) and
    of as many micrographs simulated with ``config`` (same size), for whole micrographs and for
    their background (:func:`background_tiles`, the same rule on both); with the mean absolute
    log10 difference of each pair (see :func:`nt2c_core.spectra.log_distance`). ``structures``:
    loaded atomic models (:func:`nt2c_core.simulate.structure.load_structure`)."""
    from .simulate.micrograph import MicrographSimulator

    crops = [_centre_crop(x, size) for x in images]
    h, w = crops[0].shape
    sim_config = replace(config, size=(w, h), count=len(crops), library_size=0,
                         particles=_scaled_particles(config, w * h), concentration=None)
    simulator = MicrographSimulator(list(structures), sim_config)
    simulated = [simulator.simulate(i).noisy for i in range(len(crops))]
    px = config.acquisition.pixel_size
    out = {}
    for part, pick in (("whole", lambda x: [x]), ("background", background_tiles)):
        real = radial_power([t for x in crops for t in pick(x)], px)
        sim = radial_power([t for x in simulated for t in pick(x)], px)
        out[part] = {"k": real[0].tolist(), "real": real[1].tolist(), "simulated": sim[1].tolist(),
                     "log_distance": log_distance(real, sim, k_min=COMPARE_K_MIN)}
    return out


def _centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape
    ch, cw = min(h, size), min(w, size)
    y, x = (h - ch) // 2, (w - cw) // 2
    return image[y:y + ch, x:x + cw]


def _scaled_particles(config: SimulationConfig, pixels: int) -> int:
    """Particles for a field of ``pixels`` at the crowding ``config`` has for its own size."""
    return int(round(config.particles_per_micrograph() * pixels / (config.size[0] * config.size[1])))


def plot_comparison(path: str | os.PathLike, before: dict, after: dict) -> Path:
    """PNG: real vs simulated spectra, before and after calibration, whole and background."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, part in zip(axes, ("whole", "background")):
        k = np.asarray(before[part]["k"])
        ax.semilogy(k, before[part]["real"], "k", lw=1.2, label="real")
        ax.semilogy(k, before[part]["simulated"], "C1", lw=0.8,
                    label=f"simulated, given ({before[part]['log_distance']:.3f})")
        ax.semilogy(k, after[part]["simulated"], "C0", lw=0.8,
                    label=f"simulated, calibrated ({after[part]['log_distance']:.3f})")
        ax.set_xlabel("spatial frequency [1/Å]")
        ax.set_ylabel("power (contrast²)")
        ax.set_title(f"{part}: mean |log10 ratio| in brackets")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def apply_calibration(config: SimulationConfig, path: str | os.PathLike) -> SimulationConfig:
    """``config`` with the acquisition, defocus range, astigmatism and ice thickness of a
    calibration.json written by 'nt2c calibrate' (``nt2c simulate --calibration``, ``nt2c run``'s
    ``calibration``: no refit)."""
    try:
        calibrated = SimulationConfig.from_dict(json.loads(Path(path).read_text())["simulation"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a calibration file from 'nt2c calibrate' ({exc})") from exc
    return replace(config, acquisition=calibrated.acquisition, defocus_um=calibrated.defocus_um,
                   astigmatism_um=calibrated.astigmatism_um, ice_thickness=calibrated.ice_thickness)


def _varying(path, image: np.ndarray) -> np.ndarray:
    """``image``, refused by name when it is constant (blank, saturated): no spectrum to fit."""
    if float(image.std()) == 0.0:
        raise InputError(f"{path}: constant image (every pixel {float(image.flat[0]):g}): there is no "
                         "spectrum to calibrate from")
    return image


def calibrate_files(paths: Sequence[str | os.PathLike], base: SimulationConfig, out_dir: str | os.PathLike,
                    structures: Sequence[str] = (), counting: bool = True,
                    known_defocus: tuple[float, float, float] | None = None, dose_given: bool = True,
                    max_micrographs: int = 8) -> Calibration:
    """``nt2c calibrate``: calibrate on (up to ``max_micrographs`` of) the files, write
    OUT/calibration.json (the simulator's settings, estimates, notes, spectrum distances before
    and after) and OUT/calibration.png (when ``structures`` are given)."""
    if not paths:
        raise InputError("calibrate: no micrograph given")
    if max_micrographs < 1:
        raise InputError(f"--max-micrographs = {max_micrographs}: must be at least 1")
    chosen = list(paths)[:: max(1, len(paths) // max_micrographs)][:max_micrographs]
    images = [(Path(p).name, _varying(p, read_mrc(p)[0])) for p in chosen]
    result = calibrate(images, base, counting, known_defocus, dose_given)
    report = result.to_dict()
    out = Path(out_dir)
    if structures:
        from .simulate.structure import load_structure

        models = [load_structure(p) for p in structures]  # read once for both comparisons
        before = compare_to_simulation([x for _, x in images], base, models)
        after = compare_to_simulation([x for _, x in images], result.simulation, models)
        report["spectrum_distance"] = {part: {"given": before[part]["log_distance"],
                                              "calibrated": after[part]["log_distance"]} for part in before}
        plot_comparison(out / "calibration.png", before, after)
        worse = [part for part in before if after[part]["log_distance"] > before[part]["log_distance"]]
        if worse:  # never hand back a simulation further from the data than the given values
            result.notes.append(f"the calibrated simulation is further from the micrographs' spectra than the given "
                                f"values ({', '.join(worse)}); the given values are kept")
            result.simulation = base
            report = {**result.to_dict(), "spectrum_distance": report["spectrum_distance"], "kept_given": True}
    write_json(out / "calibration.json", report)
    return result
