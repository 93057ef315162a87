"""NMSG on tomograms it was not tuned on (#39): an independent simulation, the supervised ceiling,
and the noise NMSG synthesizes against the true noise.

Cases (``--cases``):
- ``A`` and ``B``: tomograms simulated with third-party code only (``third_party/tomogram.py`` in
  the external virtualenv: ttsim3d, torch-fourier-slice, torch-ctf, torch-fourier-filter; Poisson
  counts, even/odd halves from a binomial split of the counts). A: 20S proteasome 3j9i + horse
  apoferritin 4v1w + 3 vesicles, 110 e/Å², 4 µm underfocus, +-60 deg in 3-deg steps, 560 Å ice,
  R-weighted back-projection. B: 70S ribosome 4v5d + human apoferritin 6z6u + 2 vesicles,
  80 e/Å², 3 µm, +-54 deg, 480 Å ice, torch-fourier-slice's direct Fourier inversion. 256 x 256 x
  96 voxels of 8 Å (``--quick``: 128 x 128 x 48). Each case has a second volume (other seed, same
  settings) for the supervised ceiling.
- ``own``: the project's own simulator (``nt2c_core.tomo.simulate``; bench_tomo.py's dose60 case).

Methods: raw; Gaussian with the sigma that is best against the truth (an oracle); noise2noise on
the even/odd halves (cryoCARE's idea, our 3-D U-Net, NMSG's steps); NMSG with its defaults, one
run per ``--seeds``; the supervised ceiling: the same 3-D U-Net trained on the simulator's own
clean/noisy pairs of the second volume (never the test volume), flip-averaged. Scores, in the ice
slab: PSNR after a least-squares scale and offset (and over the whole volume), SSIM; e/o FSC of the
method applied to each half (0.5 and 0.143 crossings, Å). Noise: the power of NMSG's synthetic
noise against the true noise (noisy - clean) per frequency band and direction (elevation of k from
the x-y plane towards z in the x-z plane: >= 60 deg is inside a +-60 deg missing wedge).

  python bench_tomo_third_party.py [--quick] [--cases A,B,own] [--seeds 0,1,2] [--steps N]

Writes results/<date>-tomo-third-party-<host>.json (partial after each method).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import machine, peak_rss_gb, save  # noqa: E402
from bench_tomo import CASES, EXT_PY, STRUCTURES  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from nt2c_core.acquisition import Acquisition  # noqa: E402
from nt2c_core.device import keep_freed_memory  # noqa: E402
from nt2c_core.io import read_mrc_volume  # noqa: E402
from nt2c_core.metrics import fsc, psnr, ssim  # noqa: E402
from nt2c_core.settings import NMSG, TomoSimulationConfig  # noqa: E402
from nt2c_core.tomo.nmsg import (  # noqa: E402
    Standardized,
    apply_flipped,
    cube_mosaic,
    denoise_halves,
    denoise_with,
    noise_synthesizer,
    tile_shape,
    train_even_odd,
    train_nmsg,
    train_unet3d,
)
from nt2c_core.tomo.noise import crop_tile, fine_cap, tile_origins  # noqa: E402
from nt2c_core.tomo.simulate import simulate_tomogram_files  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "structures"
SIMULATOR = HERE / "third_party" / "tomogram.py"
THIRD_PARTY = {
    "A": {
        "structures": ["3j9i_T20S_proteasome.pdb.gz", "4v1w_horse_apoferritin.cif.gz"],
        "args": "--defocus 4 --dose 110 --tilt-range 60 --ice 560 --particles 40 --vesicles 3 --reconstruction wbp",
        "seeds": (1, 2),
    },
    "B": {
        "structures": ["4v5d_Tth_70S_ribosome.cif.gz", "6z6u_human_apoferritin.pdb.gz"],
        "args": "--defocus 3 --dose 80 --tilt-range 54 --ice 480 --particles 30 --vesicles 2 --reconstruction fourier",
        "seeds": (3, 4),
    },
}
BANDS = ((0.02, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.5))  # cycles/px
ELEVATIONS = ((0, 30), (30, 60), (60, 91))  # deg


@dataclasses.dataclass
class Volumes:
    noisy: np.ndarray
    clean: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    slab: tuple[int, int]  # z range of the ice
    voxel: float


def read_case(folder: Path, slab: tuple[int, int] | None = None) -> Volumes:
    vols = {k: read_mrc_volume(folder / f"{k}.mrc") for k in ("noisy", "clean", "even", "odd")}
    params = json.loads((folder / "params.json").read_text())
    z = tuple(params.get("slab_z", slab or (0, vols["noisy"][0].shape[0])))
    return Volumes(*(vols[k][0] for k in ("noisy", "clean", "even", "odd")), z, vols["noisy"][1])


def third_party_case(name: str, quick: bool, work: Path) -> tuple[Volumes, Volumes] | None:
    spec = THIRD_PARTY[name]
    if not EXT_PY.exists():
        print(f"case {name}: skipped ({EXT_PY} missing; `make benchmarks/.venv-external/.installed` builds it)")
        return None
    size = "--size 128 --depth 48 --particles 10 --vesicles 1 --ice 320" if quick else ""
    out = []
    for seed in spec["seeds"]:
        folder = work / f"{name}_s{seed}"
        if not (folder / "params.json").exists():
            cmd = [str(EXT_PY), str(SIMULATOR), *(str(SHARED / s) for s in spec["structures"]), "-o", str(folder)]
            cmd += [*spec["args"].split(), *size.split(), "--seed", str(seed)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"case {name}: simulation failed: {done.stderr.strip().splitlines()[-1:]}")
                return None
        out.append(read_case(folder))
    return out[0], out[1]


def own_case(quick: bool, work: Path) -> tuple[Volumes, Volumes]:
    """bench_tomo.py's dose60 tomogram, and one more of the same settings (next seed) for the ceiling."""
    size, thickness = ((96, 96), 64) if quick else ((160, 160), 64)
    case = CASES["dose60"]
    out = []
    for seed in (case.seed, case.seed + 1):
        cfg = TomoSimulationConfig(
            acquisition=Acquisition(pixel_size=8.0, dose=case.dose, b_factor=60.0, detector="ideal"),
            size=size,
            thickness=thickness,
            ice_thickness=400.0,
            particles=case.count(quick),
            seed=seed,
        )
        folder = work / f"own_s{seed}"
        if not (folder / "params.json").exists():
            simulate_tomogram_files(STRUCTURES, cfg, folder, progress=False)
        ice = int(round(cfg.ice_thickness / cfg.acquisition.pixel_size))
        out.append(read_case(folder, ((thickness - ice) // 2, (thickness + ice) // 2)))
    return out[0], out[1]


def scores(full: np.ndarray, even: np.ndarray, odd: np.ndarray, v: Volumes) -> dict:
    z0, z1 = v.slab
    curve = fsc(even, odd, v.voxel)
    return {
        "psnr_slab_db": round(psnr(full[z0:z1], v.clean[z0:z1]), 3),
        "psnr_all_db": round(psnr(full, v.clean), 3),
        "ssim_slab": round(ssim(full[z0:z1], v.clean[z0:z1]), 4),
        "eo_fsc_0.5_A": round(curve.resolution(0.5), 1),
        "eo_fsc_0.143_A": round(curve.resolution(0.143), 1),
    }


def power_cells(volume: np.ndarray) -> dict[str, float]:
    """Mean power per (band, elevation) cell of a volume's transform."""
    power = np.abs(np.fft.rfftn(volume)) ** 2 / volume.size
    kz = np.fft.fftfreq(volume.shape[0])[:, None, None]
    ky = np.fft.fftfreq(volume.shape[1])[None, :, None]
    kx = np.fft.rfftfreq(volume.shape[2])[None, None, :]
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    elevation = np.broadcast_to(np.degrees(np.arctan2(np.abs(kz), np.abs(kx) + 1e-9)), power.shape)

    def cell(lo, hi, a, b):
        return float(power[(radius >= lo) & (radius < hi) & (elevation >= a) & (elevation < b)].mean())

    return {f"k {lo}-{hi} elev {a}-{b}": cell(lo, hi, a, b) for lo, hi in BANDS for a, b in ELEVATIONS}


def noise_match(v: Volumes, config=NMSG) -> dict:
    """NMSG's synthetic noise (its default synthesizer, one volume-sized draw) against the true noise
    (noisy - clean), both in the z-scored volume's units: power ratio per cell and the mean
    |ln ratio| over the cells."""
    std = Standardized.of(v.noisy)
    true = power_cells((v.noisy - v.clean) / std.std)

    def match(synth) -> dict:
        made = power_cells(synth.sample(1, v.noisy.shape, seed=5)[0, 0].numpy())
        ratio = {k: round(made[k] / true[k], 3) for k in true}
        return {
            "over_true": ratio,
            "mean_abs_log_ratio": round(float(np.mean([abs(np.log(r)) for r in ratio.values()])), 3),
        }

    return {
        "true_power": {k: round(t, 5) for k, t in true.items()},
        "default": match(noise_synthesizer(std.data, config, None, "cpu", False)),
        "fine_cap": match(
            fine_cap(cube_mosaic(std.data, config), std.data, seed=config.seed)
        ),  # at the volume's resolution
    }


def train_supervised(train: Volumes, config, seed: int = 0):
    """The ceiling: NMSG's 3-D U-Net trained on (noisy -> clean) tiles of another volume of the
    same simulator, both in the noisy volume's z-scored units; flips as NMSG's."""
    std = Standardized.of(train.noisy)
    x_all, y_all = std.data, ((train.clean - std.mean) / std.std).astype(np.float32)
    tile = tile_shape(x_all.shape, config)

    def batch(step: int):
        rng = np.random.default_rng([seed, step])
        origins = tile_origins(rng, x_all.shape, tile, config.batch_size)
        flips = rng.integers(2, size=(config.batch_size, 3))
        x = np.stack([crop_tile(x_all, o, tile, f) for o, f in zip(origins, flips)])[:, None]
        y = np.stack([crop_tile(y_all, o, tile, f) for o, f in zip(origins, flips)])[:, None]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

    def loss_fn(network, x, y):
        return {"loss": F.mse_loss(network(x).float(), y)}

    return train_unet3d(batch, loss_fn, config, None, "cpu", False, "supervised")


def run_case(name: str, test: Volumes, train: Volumes, args, results: dict) -> None:
    rows = results["cases"].setdefault(name, {})
    config = dataclasses.replace(NMSG, steps=args.steps)
    z0, z1 = test.slab
    rows["raw"] = scores(test.noisy, test.even, test.odd, test)
    sigmas = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
    best = max(sigmas, key=lambda s: psnr(gaussian_filter(test.noisy, s)[z0:z1], test.clean[z0:z1]))
    rows[f"Gaussian (oracle sigma {best} px)"] = scores(
        *(gaussian_filter(x, best) for x in (test.noisy, test.even, test.odd)), test
    )
    rows["noise"] = noise_match(test, config)
    print(f"  noise synthetic/true: {rows['noise']['default']['over_true']}", flush=True)
    save_partial(results)

    def nmsg(seed: int) -> None:
        cfg = dataclasses.replace(config, seed=seed)
        t0 = time.time()
        result = train_nmsg(test.noisy, cfg, None, work=None, progress=False)

        def den(x, synthesizer=None):  # halves: noise from their own blocks
            return denoise_with(result.network, x, config=cfg, synthesizer=synthesizer)

        label = f"NMSG defaults, seed {seed}"
        rows[label] = {
            **scores(den(test.noisy, result.synthesizer), den(test.even), den(test.odd), test),
            "seconds": round(time.time() - t0, 1),
        }
        print(f"  NMSG seed {seed}: {rows[label]}", flush=True)
        save_partial(results)

    nmsg(args.seeds[0])  # the first seed, then the baselines, then the other seeds (partial results stay useful)
    t0 = time.time()
    n2n = train_even_odd(test.even, test.odd, config, progress=False)
    de, do = denoise_halves(n2n.network, test.even, test.odd, config)
    rows["noise2noise even/odd"] = {**scores((de + do) / 2, de, do, test), "seconds": round(time.time() - t0, 1)}
    print(f"  noise2noise: {rows['noise2noise even/odd']}", flush=True)
    save_partial(results)
    t0 = time.time()
    ceiling = train_supervised(train, config)

    def sup(x):
        std = Standardized.of(x)
        return std.restore(apply_flipped(ceiling.network, std.data, config.infer_margin, "cpu", flips=True))

    label = "supervised ceiling (other volume's clean/noisy pairs)"
    rows[label] = {
        **scores(sup(test.noisy), sup(test.even), sup(test.odd), test),
        "seconds": round(time.time() - t0, 1),
    }
    print(f"  supervised: {rows[label]}", flush=True)
    for seed in args.seeds[1:]:
        nmsg(seed)
    rows["summary"] = summary(rows)
    print(f"  summary: {rows['summary']}", flush=True)
    rows["peak_rss_gb"] = round(peak_rss_gb(), 2)
    save_partial(results)


def summary(rows: dict) -> dict:
    """NMSG's slab PSNR over the seeds (mean, sd) against the oracle Gaussian, noise2noise and raw,
    and where it stands between the Gaussian (0) and the supervised ceiling (1); SSIM and e/o FSC
    against raw: the #39 targets."""
    seeds = [r for k, r in rows.items() if k.startswith("NMSG defaults")]
    gauss = next(r for k, r in rows.items() if k.startswith("Gaussian"))
    raw, n2n = rows["raw"], rows.get("noise2noise even/odd")
    ceiling = next((r for k, r in rows.items() if k.startswith("supervised")), None)
    psnrs = np.array([r["psnr_slab_db"] for r in seeds])
    mean = float(psnrs.mean())
    out = {
        "nmsg_seeds": len(seeds),
        "nmsg_psnr_slab_mean_db": round(mean, 2),
        "nmsg_psnr_slab_sd_db": round(float(psnrs.std(ddof=1)) if len(psnrs) > 1 else 0.0, 2),
        "margin_over_gaussian_db": round(mean - gauss["psnr_slab_db"], 2),
        "ssim_above_raw": all(r["ssim_slab"] > raw["ssim_slab"] for r in seeds),
        "eo_fsc_0.143_not_coarser_than_raw": all(r["eo_fsc_0.143_A"] <= raw["eo_fsc_0.143_A"] for r in seeds),
    }
    if n2n:
        out["margin_over_noise2noise_db"] = round(mean - n2n["psnr_slab_db"], 2)
    if ceiling:
        room = ceiling["psnr_slab_db"] - gauss["psnr_slab_db"]
        out["fraction_of_room_gaussian_to_ceiling"] = round((mean - gauss["psnr_slab_db"]) / room, 2) if room else None
    return out


def save_partial(results: dict) -> None:
    if not results["quick"]:
        save("tomo-third-party", results)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small volumes and budgets (checks the script)")
    parser.add_argument("--work", default=str(HERE / "work" / "tomo3p"), help="work folder")
    parser.add_argument("--cases", default="A,B,own", help="of A, B (third-party) and own")
    parser.add_argument("--seeds", default="0,1,2", help="NMSG seeds")
    parser.add_argument("--steps", type=int, default=NMSG.steps, help="training steps of every network")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as every nt2c stage does (nt2c_core.logs.stage)
    args.seeds = [int(s) for s in args.seeds.split(",") if s] or [0]
    if args.quick:
        args.steps, args.seeds = min(args.steps, 40), args.seeds[:1]
    if not SHARED.exists():
        print(f"bench_tomo_third_party: shared structures missing under {SHARED}; nothing to do")
        return 0
    work = Path(args.work) / ("quick" if args.quick else "full")
    results = {"quick": args.quick, "steps": args.steps, "seeds": args.seeds, "machine": machine(), "cases": {}}
    for name in [c for c in args.cases.split(",") if c]:
        print(f"\ncase {name}", flush=True)
        pair = own_case(args.quick, work) if name == "own" else third_party_case(name, args.quick, work)
        if pair is None:
            continue
        run_case(name, *pair, args, results)
        rows = results["cases"][name]
        print(f"{'method':<52} {'PSNR slab':>9} {'all':>7} {'SSIM':>6} {'FSC.143 Å':>9}")
        for label, r in rows.items():
            if isinstance(r, dict) and "psnr_slab_db" in r:
                print(
                    f"{label:<52} {r['psnr_slab_db']:9.2f} {r['psnr_all_db']:7.2f} {r['ssim_slab']:6.3f} "
                    f"{r['eo_fsc_0.143_A']:9.1f}"
                )
    save_partial(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
