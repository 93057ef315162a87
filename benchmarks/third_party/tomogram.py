"""A cryo-ET tomogram simulated with third-party code only: the judge of the tomogram denoisers.

Imports neither nt2c nor Scipion; run with the benchmark's external virtualenv (``make bench``
installs ttsim3d, torch-fourier-slice, torch-ctf and torch-fourier-filter there):

  python tomogram.py STRUCTURE.pdb[.gz] [STRUCTURE ...] -o OUT [--size 256 --depth 96 --seed 0 ...]

- specimen: ttsim3d potentials (Lobato-Dyson form factors, 8 Å voxels by default) of each structure,
  rotated at random (scipy, cubic splines) and placed without overlap in an ice slab of ``--ice``
  [Å] in the middle of a ``--size``³ cube, plus ``--vesicles`` lipid bilayers (two head-group
  shells 38 Å apart and a low-density tail layer; radii 150-250 Å). Contrast is taken against
  vitreous water: protein potential times (1 - 4.5 V / 7.1 V), the mean inner potentials of water
  and protein; vesicles in V converted with the interaction constant; a flat slab of ice adds only a
  constant phase, so the ice itself is not drawn;
- tilt series: ``--tilt-range`` [deg] in ``--tilt-step`` steps about y, dose-symmetric order
  (Hagen scheme: 0, then alternating sides in pairs), ``--dose`` [e/Å²] in all, shared equally;
  projections are torch-fourier-slice central slices (2x padding) of the phase per voxel; each
  tilt's signal is exposure-filtered for the dose
  before it (Grant & Grigorieff 2015, torch-fourier-filter's critical exposure) and imaged with the
  weak-phase approximation, I = 1 - 2 CTF * phase (torch-ctf, 300 kV, Cs 2.7 mm, amplitude contrast
  0.07, ``--defocus`` [µm] underfocus, no astigmatism; dark particles, no CTF correction);
  inelastic loss thins each tilt's beam by exp(-ice / (mean free path cos t)) (no energy filter:
  3000 Å);
- counts: Poisson at the tilt's electrons per pixel; even/odd halves from a binomial split of
  every pixel's counts (what splitting a movie's frames gives); each image in contrast units
  (counts / expected counts - 1);
- reconstruction (``--reconstruction``): 'wbp', R-weighted back-projection (each tilt's transform
  times the ramp |k_x| inserted with torch-fourier-slice as a central slice, summed: IMOD's default
  kind, noise power rising with frequency), or 'fourier', torch-fourier-slice's
  ``backproject_2d_to_3d`` (slices divided by their sampling density, clamped at 1: a direct Fourier
  inversion, noise power falling with frequency); cropped to the central ``--depth`` slices; the
  truth is the same reconstruction of the noise-free tilts (CTF and
  missing wedge kept: what a perfect denoiser could give).

Writes OUT/noisy.mrc, even.mrc, odd.mrc, clean.mrc (z, y, x float32, voxel size set) and
OUT/params.json (slab z range in the written volume, objects placed, tilt angles, dose per tilt).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

VOLTAGE, CS, AMPLITUDE = 300.0, 2.7, 0.07
WATER_V, PROTEIN_V = 4.5, 7.1  # mean inner potentials [V]
SIGMA = 6.526e-4  # interaction constant at 300 kV [rad / (V Å)]
MEAN_FREE_PATH = 3000.0  # inelastic, 300 kV, no energy filter [Å]


def potential(structure: Path, box: int, pixel: float) -> np.ndarray:
    """ttsim3d's potential of ``structure`` centred in a ``box``³ of ``pixel`` [Å], as the phase shift
    [rad] each voxel gives a ray through it (what ttsim3d returns: the sum over a voxel column is the
    projected phase), relative to water. ``upsampling=1``: ttsim3d 0.4.2's Fourier crop after
    up-sampling shifts the rfft's half axis too and keeps the wrong frequencies (a noise-like
    'structure'), so the potential is computed at the output pixel size directly."""
    from ttsim3d.models import Simulator, SimulatorConfig

    with tempfile.TemporaryDirectory() as tmp:
        path = structure
        if structure.suffix == ".gz":
            path = Path(tmp) / structure.stem
            with gzip.open(structure) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
        sim = Simulator(
            pdb_filepath=str(path),
            pixel_spacing=pixel,
            volume_shape=(box, box, box),
            simulator_config=SimulatorConfig(
                voltage=VOLTAGE, apply_dose_weighting=False, apply_dqe=False, upsampling=1, store_volume=True
            ),
        )
        volume = sim.run(device="cpu").numpy().astype(np.float32)
    return volume * (1 - WATER_V / PROTEIN_V)


def extent(volume: np.ndarray) -> float:
    """Radius [px] holding 99 % of the volume's integrated |potential| about the box centre."""
    c = (np.array(volume.shape) - 1) / 2
    grid = np.indices(volume.shape).reshape(3, -1).T - c
    r = np.linalg.norm(grid, axis=1)
    w = np.abs(volume).ravel()
    order = np.argsort(r)
    cum = np.cumsum(w[order]) / w.sum()
    return float(r[order][np.searchsorted(cum, 0.99)])


def rotated(volume: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    c = (np.array(volume.shape) - 1) / 2
    return affine_transform(volume, rotation, offset=c - rotation @ c, order=3, mode="constant").astype(np.float32)


def vesicle(radius: float, pixel: float) -> np.ndarray:
    """A lipid bilayer sphere of ``radius`` [Å] in a box just large enough (phase per voxel [rad],
    relative to water): head-group shells (+2.0 V, sigma 5 Å) at radius +-19 Å, tails (-1.5 V,
    sigma 8 Å) between."""
    box = int(2 * math.ceil((radius + 40) / pixel)) + 1
    c = (box - 1) / 2
    sub = 3  # supersampled on a 3x finer grid, then averaged
    g = (np.arange(box * sub) + 0.5) / sub - 0.5 - c
    z, y, x = np.meshgrid(g, g, g, indexing="ij", sparse=True)
    r = np.sqrt(z * z + y * y + x * x) * pixel

    def shell(at: float, sigma: float) -> np.ndarray:
        return np.exp(-0.5 * ((r - at) / sigma) ** 2)

    v = 2.0 * (shell(radius - 19, 5) + shell(radius + 19, 5)) - 1.5 * shell(radius, 8)
    v = v.reshape(box, sub, box, sub, box, sub).mean((1, 3, 5))
    return (v * SIGMA * pixel).astype(np.float32)


def place(specimen: np.ndarray, obj: np.ndarray, centre: np.ndarray) -> None:
    """Add ``obj`` into ``specimen`` centred at ``centre`` (z, y, x voxels), clipped at the edges."""
    lo = np.round(centre).astype(int) - np.array(obj.shape) // 2
    src = [slice(max(0, -a), min(s, n - a)) for a, s, n in zip(lo, obj.shape, specimen.shape)]
    dst = [slice(max(0, a), min(n, a + s)) for a, s, n in zip(lo, obj.shape, specimen.shape)]
    specimen[tuple(dst)] += obj[tuple(src)]


def build_specimen(args, rng: np.random.Generator) -> tuple[np.ndarray, list[dict], tuple[int, int]]:
    n, pixel = args.size, args.pixel_size
    ice_px = int(round(args.ice / pixel))
    z0 = (n - ice_px) // 2
    specimen = np.zeros((n, n, n), np.float32)
    templates = []
    for path in args.structures:
        vol = potential(Path(path), args.box, pixel)
        templates.append((Path(path).name.split(".")[0], vol, extent(vol)))
    objects = [("vesicle", None, float(rng.uniform(150, 250)) / pixel) for _ in range(args.vesicles)]
    objects += [templates[i % len(templates)] for i in range(args.particles)]
    placed: list[dict] = []
    margin = 4  # keep objects this far [px] from the cube's x-y edges
    for name, vol, radius in objects:
        zr = (z0 + radius + 1, z0 + ice_px - radius - 1)
        if zr[0] > zr[1]:
            continue  # thicker than the ice
        side = (margin + radius, n - margin - radius)
        for _ in range(500):
            centre = np.array([rng.uniform(*zr), rng.uniform(*side), rng.uniform(*side)])
            if all(np.linalg.norm(centre - p["centre"]) > radius + p["radius"] + 1 for p in placed):
                break
        else:
            continue  # no free place
        if vol is None:
            obj = vesicle(radius * pixel, pixel)
        else:
            obj = rotated(vol, Rotation.random(random_state=int(rng.integers(2**31))).as_matrix())
        place(specimen, obj, centre)
        placed.append({"name": name, "centre": centre, "radius": radius})
    return specimen, placed, (z0, z0 + ice_px)


def tilt_scheme(tilt_range: float, step: float) -> list[float]:
    """Dose-symmetric (Hagen) order: 0, +s, -s, -2s, +2s, +3s, ... within +-tilt_range."""
    k = int(round(tilt_range / step))
    order, sign = [0.0], 1
    for i in range(1, k + 1):
        pair = [sign * i * step, -sign * i * step]
        order += pair
        sign = -sign
    return order


def y_rotation(angle_deg: float) -> np.ndarray:
    """Rotation about y for xyz column vectors (torch-fourier-slice's convention)."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def weighted_backprojection(images: torch.Tensor, matrices: torch.Tensor, pad: float = 2.0) -> torch.Tensor:
    """R-weighted back-projection (IMOD's default kind) with torch-fourier-slice: each (padded) tilt
    image's transform multiplied by |k_x| (the ramp across the tilt axis) and inserted as a central
    slice, summed with no division by the sampling density, then the linear-interpolation sinc²
    correction; (d, d, d) like ``backproject_2d_to_3d``."""
    import torch.nn.functional as F
    from torch_fourier_slice.slice_insertion import insert_central_slices_rfft_3d
    from torch_fourier_slice.volume_utils import separable_sinc2_correction

    p = int(images.shape[-1] * (pad - 1) // 2)
    images = F.pad(images, [p] * 4)
    w = images.shape[-1]
    dft = torch.fft.fftshift(torch.fft.rfftn(torch.fft.ifftshift(images, dim=(-2, -1)), dim=(-2, -1)), dim=(-2,))
    dft = dft * (torch.fft.rfftfreq(w).abs() * w)[None, None, :]  # |k_x| [cycles per padded box]
    volume, _ = insert_central_slices_rfft_3d(dft, (w, w, w), matrices)
    volume = torch.fft.irfftn(torch.fft.ifftshift(volume, dim=(-3, -2)), dim=(-3, -2, -1), s=(w, w, w))
    volume = torch.fft.fftshift(volume, dim=(-3, -2, -1)) / separable_sinc2_correction((w, w, w))
    return F.pad(volume, [-p] * 6) * (math.pi / len(matrices))


def simulate(args) -> dict:
    from torch_ctf import calculate_ctf_2d
    from torch_fourier_filter.dose_weight import critical_exposure
    from torch_fourier_slice import backproject_2d_to_3d, project_3d_to_2d

    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    specimen, placed, slab = build_specimen(args, rng)
    angles = tilt_scheme(args.tilt_range, args.tilt_step)
    matrices = torch.as_tensor(np.stack([y_rotation(a) for a in angles]), dtype=torch.float32)
    n, pixel = args.size, args.pixel_size
    phase = project_3d_to_2d(torch.as_tensor(specimen), matrices).numpy()
    del specimen
    dose_per_tilt = args.dose / len(angles)
    before = np.arange(len(angles)) * dose_per_tilt  # dose each tilt's specimen had already taken
    ctf = calculate_ctf_2d(
        defocus=torch.full((len(angles),), args.defocus, dtype=torch.float64),
        astigmatism=torch.zeros(len(angles), dtype=torch.float64),
        astigmatism_angle=torch.zeros(len(angles), dtype=torch.float64),
        voltage=VOLTAGE,
        spherical_aberration=CS,
        amplitude_contrast=AMPLITUDE,
        phase_shift=0.0,
        pixel_size=pixel,
        image_shape=(n, n),
        rfft=True,
        fftshift=False,
    ).numpy()
    ky, kx = np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :]
    freq = torch.as_tensor(np.sqrt(ky**2 + kx**2) / pixel)  # [1/Å]
    exposure = np.exp(-before[:, None, None] / (2 * critical_exposure(freq).numpy()[None]))
    contrast = -2 * np.fft.irfft2(np.fft.rfft2(phase) * ctf * exposure, s=(n, n)).astype(np.float32)
    del phase
    thin = np.exp(-args.ice / (MEAN_FREE_PATH * np.cos(np.radians(angles))))
    expected = dose_per_tilt * pixel**2 * thin[:, None, None] * np.clip(1 + contrast, 0, None)
    counts = rng.poisson(expected)
    even = rng.binomial(counts, 0.5)
    images = {
        "clean": contrast,
        "noisy": counts / expected.mean((1, 2), keepdims=True) - 1,
        "even": even / (expected.mean((1, 2), keepdims=True) / 2) - 1,
        "odd": (counts - even) / (expected.mean((1, 2), keepdims=True) / 2) - 1,
    }
    del counts, even, expected
    lo = (n - args.depth) // 2
    for name, tilts in images.items():
        tilts = torch.as_tensor(np.asarray(tilts, np.float32))
        if args.reconstruction == "wbp":
            vol = weighted_backprojection(tilts, matrices).numpy()
        else:
            vol = backproject_2d_to_3d(tilts, matrices).numpy()
        vol = np.ascontiguousarray(vol[lo : lo + args.depth], np.float32)
        with mrcfile.new(out / f"{name}.mrc", overwrite=True) as m:
            m.set_data(vol)
            m.voxel_size = pixel
    params = {k: v for k, v in vars(args).items()}
    params.update(
        simulator="ttsim3d + torch-fourier-slice + torch-ctf + torch-fourier-filter",
        slab_z=[max(0, slab[0] - lo), min(args.depth, slab[1] - lo)],
        angles=angles,
        dose_per_tilt=dose_per_tilt,
        electrons_per_px_untilted=dose_per_tilt * pixel**2 * float(thin[0]),
        objects=[
            {"name": p["name"], "centre_zyx": [round(float(c), 1) for c in p["centre"] - [lo, 0, 0]]} for p in placed
        ],
        seconds=round(time.time() - t0, 1),
    )
    (out / "params.json").write_text(json.dumps(params, indent=1))
    return params


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("structures", nargs="+")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--size", type=int, default=256, help="cube side [px]; the tomogram's x and y")
    p.add_argument("--depth", type=int, default=96, help="z slices written [px]")
    p.add_argument("--pixel-size", type=float, default=8.0, help="[Å]")
    p.add_argument("--ice", type=float, default=560.0, help="ice thickness [Å]")
    p.add_argument("--box", type=int, default=48, help="box of each structure's potential [px]")
    p.add_argument("--particles", type=int, default=40)
    p.add_argument("--vesicles", type=int, default=3)
    p.add_argument("--tilt-range", type=float, default=60.0, help="[deg]")
    p.add_argument("--tilt-step", type=float, default=3.0, help="[deg]")
    p.add_argument("--dose", type=float, default=110.0, help="total [e/Å²]")
    p.add_argument("--defocus", type=float, default=4.0, help="underfocus [µm]")
    p.add_argument(
        "--reconstruction",
        choices=("wbp", "fourier"),
        default="wbp",
        help="R-weighted back-projection, or torch-fourier-slice's density-weighted Fourier inversion",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps({k: v for k, v in simulate(args).items() if k not in ("angles", "objects")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
