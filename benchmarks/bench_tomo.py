"""NMSG tomogram denoising (#19): quality against ground truth, even/odd FSC, speed and memory.

1. Simulated tomograms (``nt2c_core.tomo.simulate``) of structures never used in developing NMSG
   (70S ribosome 4v5d and spliceosome 3jb9 from ../shared/data/structures; development used the
   shipped apoferritin), at two doses (8 particles placed in 160 x 160 x 64 voxels), and a dense
   case (36 placed: 29 apoferritins among them, dose 60; a noise model must find noise between
   particles there). Methods: raw; Gaussian (best sigma against the truth: an
   oracle, the strongest Gaussian there is); BM4D (noise sigma from the volume's quietest cubes);
   Topaz-3D's shipped general model (``unet-3d-10a``, in the benchmark's own virtualenv); a
   noise2noise 3-D U-Net trained on the even/odd halves (cryoCARE's idea, our network); NMSG with
   the 3-D patch noise (default) and with the authors' 2-D GAN noise. Scores: PSNR/SSIM against
   the noiseless reconstruction, and the FSC between the method applied to the even and to the
   odd half (0.5 and 0.143 crossings, Å).
2. Speed/memory: ``nt2c denoise-tomo`` with its defaults on a 512 x 512 x 128 simulated tomogram
   (40 shipped apoferritins), in a subprocess (wall time, peak RSS, PSNR raw vs NMSG).
3. Real crops (../shared/data/tomograms, microtubules, 8-bit SIRT): NMSG with its defaults;
   central slices side by side in docs/tomo_real.png.

Prints tables and writes ``results/<date>-tomo-<host>.json`` and docs/tomo_simulated.png.

  python bench_tomo.py [--quick]    (make bench runs it)
  python bench_tomo.py --budget-scan 400,1600   (is a method budget-limited? NMSG default and
      noise2noise at each step count on the dose-60 tomogram, own work folders; results/<date>-tomo-budget-<host>.json)
  python bench_tomo.py --speed-only   (the 512 x 512 x 128 speed/memory run alone)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from _common import save  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from nt2c_core.acquisition import Acquisition  # noqa: E402
from nt2c_core.data import APOFERRITIN  # noqa: E402
from nt2c_core.io import read_mrc_volume  # noqa: E402
from nt2c_core.metrics import fsc, psnr, ssim  # noqa: E402
from nt2c_core.settings import NMSG, TomoSimulationConfig  # noqa: E402
from nt2c_core.tomo.figures import slices_figure  # noqa: E402
from nt2c_core.tomo.nmsg import Standardized, denoise_halves, denoise_with, train_even_odd, train_nmsg  # noqa: E402
from nt2c_core.tomo.noise import noise_cubes  # noqa: E402
from nt2c_core.tomo.simulate import simulate_tomogram_files  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
STRUCTURES = [
    SHARED / "structures" / "4v5d_Tth_70S_ribosome.cif.gz",
    SHARED / "structures" / "3jb9_Spombe_spliceosome.cif.gz",
]
EXT_PY = HERE / ".venv-external" / "bin" / "python"
DOCS = ROOT / "docs"


def scores(full: np.ndarray, even: np.ndarray, odd: np.ndarray, clean: np.ndarray, voxel: float) -> dict:
    curve = fsc(even, odd, voxel)
    return {
        "psnr_db": round(psnr(full, clean), 3),
        "ssim": round(ssim(full, clean), 4),
        "eo_fsc_0.5_A": round(curve.resolution(0.5), 1),
        "eo_fsc_0.143_A": round(curve.resolution(0.143), 1),
    }


def noise_sigma(volume: np.ndarray) -> float:
    """Noise std of a volume from its quietest 16-px cubes (what NMSG's noise model sees)."""
    std = Standardized.of(volume)
    return float(noise_cubes(std.data, 16, 0.2).std() * std.std)


def external(method: str, files: list[Path], out: Path, sigmas: dict | None = None) -> dict[str, np.ndarray] | None:
    """Run a baseline in the external virtualenv; None (with the reason printed) when it is absent."""
    if all((out / f.name).exists() for f in files):  # an earlier run of this work folder
        return {f.name: read_mrc_volume(out / f.name)[0] for f in files}
    if not EXT_PY.exists():
        print(f"  {method}: skipped ({EXT_PY} missing; `make benchmarks/.venv-external/.installed` builds it)")
        return None
    cmd = [str(EXT_PY), str(HERE / "external_runner.py"), method, *map(str, files), "-o", str(out)]
    if method == "topaz3d":
        cmd += ["--model", "unet-3d-10a", "--patch-size", "96", "--padding", "48"]
    if sigmas is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sigmas.json").write_text(json.dumps(sigmas))
        cmd += ["--sigmas", str(out / "sigmas.json")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(
            f"  {method}: failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode})"
        )
        return None
    return {f.name: read_mrc_volume(out / f.name)[0] for f in files}


@dataclasses.dataclass(frozen=True)
class Case:
    """A simulated benchmark tomogram (160 x 160 x 64 voxels of 8 Å; 96 x 96 x 64 with --quick)."""

    dose: float  # total over the tilt series [e/Å²]
    particles: int  # requested; the simulator places as many as fit without overlap
    seed: int
    apoferritin: bool = False  # add the shipped apoferritin to the structures (dense case)

    def count(self, quick: bool) -> int:
        return max(self.particles // 3, 1) if quick else self.particles

    def describe(self, quick: bool) -> str:
        return f"{self.count(quick)} particles requested, {self.dose:g} e/Å² total (8 Å voxels, 41 tilts -60..60)"


CASES = {"dose60": Case(60.0, 12, 11), "dose30": Case(30.0, 12, 11), "dense60": Case(60.0, 80, 13, apoferritin=True)}


def simulated_case(name: str, case: Case, args, work: Path) -> tuple[dict, dict]:
    size, thickness = ((96, 96), 64) if args.quick else ((160, 160), 64)
    particles = case.count(args.quick)
    cfg = TomoSimulationConfig(
        acquisition=Acquisition(pixel_size=8.0, dose=case.dose, b_factor=60.0, detector="ideal"),
        size=size,
        thickness=thickness,
        ice_thickness=400.0,
        particles=particles,
        seed=case.seed,
    )
    folder = work / name
    if not (folder / "params.json").exists():
        structures = [s for s in STRUCTURES if s.exists()] + ([APOFERRITIN] if case.apoferritin else [])
        simulate_tomogram_files(structures, cfg, folder, progress=False)
    vols = {k: read_mrc_volume(folder / f"{k}.mrc")[0] for k in ("noisy", "clean", "even", "odd", "oversmoothed")}
    noisy, clean, even, odd = vols["noisy"], vols["clean"], vols["even"], vols["odd"]
    voxel = cfg.acquisition.pixel_size
    rows, shown = {}, {"raw": noisy, "truth (noiseless WBP)": clean}
    rows["raw"] = scores(noisy, even, odd, clean, voxel)
    best = max((0.5, 0.75, 1.0, 1.5, 2.0, 3.0), key=lambda s: psnr(gaussian_filter(noisy, s), clean))
    rows[f"Gaussian (best sigma {best} px)"] = scores(
        *(gaussian_filter(v, best) for v in (noisy, even, odd)), clean, voxel
    )
    shown["Gaussian"] = gaussian_filter(noisy, best)
    files = [folder / f"{k}.mrc" for k in ("noisy", "even", "odd")]
    bm4d = external("bm4d", files, folder / "bm4d", {f.name: noise_sigma(read_mrc_volume(f)[0]) for f in files})
    if bm4d:
        rows["BM4D"] = scores(bm4d["noisy.mrc"], bm4d["even.mrc"], bm4d["odd.mrc"], clean, voxel)
    t0 = time.time()
    topaz = external("topaz3d", files, folder / "topaz3d")
    if topaz:
        rows["Topaz-3D (unet-3d-10a)"] = scores(topaz["noisy.mrc"], topaz["even.mrc"], topaz["odd.mrc"], clean, voxel)
        rows["Topaz-3D (unet-3d-10a)"]["seconds"] = round(time.time() - t0, 1)
        shown["Topaz-3D"] = topaz["noisy.mrc"]
    config = dataclasses.replace(NMSG, steps=60 if args.quick else args.steps)
    t0 = time.time()
    n2n = train_even_odd(even, odd, config, work=folder / "n2n", progress=False)
    de, do = denoise_halves(n2n.network, even, odd, config)
    rows["noise2noise even/odd (3-D U-Net)"] = {
        **scores((de + do) / 2, de, do, clean, voxel),
        "seconds": round(time.time() - t0, 1),
    }
    shown["noise2noise e/o"] = (de + do) / 2
    variants = {
        "NMSG, r2r pairs, 3-D patch noise (default)": {},
        "NMSG, residual U-Net (the authors'; the default until 2026-12-02)": {"residual": True},
        "NMSG, noise power not capped (the default until 2026-12-02)": {"noise_cap": False},
        "NMSG, the earlier default (alpha 0.5, no flips, f(volume) alone, residual)": {
            "alpha": 0.5,
            "flips": False,
            "infer_flips": False,
            "infer_draws": 0,
            "residual": True,
        },
        "NMSG, the authors' pairs and loss, 3-D patch noise": {"pairing": "nmsg", "smooth": 0.05, "guide": 0.5},
        "NMSG, r2r pairs, 2-D GAN noise (authors' noise model)": {"noise_model": "gan2d"},
    }
    for label, changes in variants.items():
        if args.only_default and changes:
            continue
        t0 = time.time()
        cfg_n = dataclasses.replace(config, **changes, gan_iterations=40 if args.quick else NMSG.gan_iterations)
        key = "_".join(f"{k}-{v}" for k, v in changes.items()) or "default"
        result = train_nmsg(noisy, cfg_n, vols["oversmoothed"], work=folder / f"nmsg_{key}", progress=False)

        def den(v):
            return denoise_with(result.network, v, config=cfg_n, synthesizer=None)

        full = den(noisy)
        rows[label] = {**scores(full, den(even), den(odd), clean, voxel), "seconds": round(time.time() - t0, 1)}
        if not changes:
            shown["NMSG (r2r)"] = full
        print(f"  {label}: {rows[label]}", flush=True)
    return rows, shown


def timed_child(command: list[str], env: dict) -> tuple[float, int]:
    """(wall seconds, peak RSS in kB) of one child process, from its own resource usage (wait4);
    CalledProcessError when it fails."""
    t0 = time.time()
    child = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command)
    return time.time() - t0, usage.ru_maxrss


def speed(args, work: Path) -> dict:
    """``nt2c denoise-tomo`` with defaults on a 512 x 512 x 128 tomogram (quick: 128 x 128 x 64)."""
    side, depth, particles = (128, 64, 6) if args.quick else (512, 128, 40)
    cfg = TomoSimulationConfig(
        acquisition=Acquisition(pixel_size=8.0, dose=60.0, b_factor=60.0, detector="ideal"),
        size=(side, side),
        thickness=depth,
        ice_thickness=600.0,
        particles=particles,
        seed=5,
    )
    folder = work / f"speed_{side}x{side}x{depth}"
    if not (folder / "params.json").exists():  # the shipped apoferritin: quick to simulate; speed does not depend on it
        simulate_tomogram_files([APOFERRITIN], cfg, folder, progress=False)
    clean, noisy = read_mrc_volume(folder / "clean.mrc")[0], read_mrc_volume(folder / "noisy.mrc")[0]
    runs = {}
    # the baseline, in the same run: the same command with glibc's default allocator (every freed
    # block over 32 MB unmapped, as before nt2c kept freed memory)
    for label, env in (("defaults", {}), ("baseline: glibc default allocator", {"NT2C_KEEP_FREED_MEMORY": "0"})):
        if args.speed_no_baseline and env:
            continue
        out = folder / f"denoised_{len(runs)}.mrc"
        command = [
            str(ROOT / ".venv" / "bin" / "nt2c"),
            "-q",
            "denoise-tomo",
            str(folder / "noisy.mrc"),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--work",
            str(folder / f"work_{time.time_ns()}"),
        ]
        seconds, peak_kb = timed_child(command, {**os.environ, **env})
        runs[label] = {
            "seconds": round(seconds, 1),
            "peak_rss_gb": round(peak_kb / 1e6, 2),
            "psnr_nmsg_db": round(psnr(read_mrc_volume(out)[0], clean), 2),
        }
        print(f"  speed {label}: {runs[label]}", flush=True)
    base = runs.get("baseline: glibc default allocator")
    return {
        "shape_xyz": [side, side, depth],
        **runs["defaults"],
        "runs": runs,
        "speedup_vs_baseline": round(base["seconds"] / runs["defaults"]["seconds"], 2) if base else None,
        "defaults": dataclasses.asdict(NMSG),
        "psnr_raw_db": round(psnr(noisy, clean), 2),
    }


def real(args, work: Path) -> dict:
    folder = SHARED / "tomograms"
    tifs = sorted(folder.glob("*.tif"))
    if not tifs:
        print(f"real tomograms: skipped ({folder} absent)")
        return {}
    import tifffile

    out, shown = {}, []
    for tif in tifs:
        volume = tifffile.imread(tif).astype(np.float32)
        config = dataclasses.replace(NMSG, steps=60 if args.quick else args.real_steps)
        t0 = time.time()
        result = train_nmsg(volume, config, work=work / "real" / f"{tif.stem}_work", progress=False)
        den = denoise_with(result.network, volume, config=config)
        out[tif.name] = {
            "shape_zyx": list(volume.shape),
            "seconds": round(time.time() - t0, 1),
            "raw_std": float(volume.std()),
            "denoised_std": float(den.std()),
        }
        shown.append((tif.stem, volume, den))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(shown), 9))
    for i, (name, raw, den) in enumerate(shown):
        for j, (title, v) in enumerate((("raw", raw), ("NMSG", den))):
            ax = fig.add_subplot(1, 2 * len(shown), 2 * i + j + 1)
            sl = v[v.shape[0] // 2]
            ax.imshow(sl, cmap="gray", vmin=np.percentile(sl, 1), vmax=np.percentile(sl, 99))
            ax.set_title(f"{name}: {title}")
            ax.axis("off")
    fig.tight_layout()
    if not args.quick:
        fig.savefig(DOCS / "tomo_real.png", dpi=80)
    return out


def budget_scan(steps: list[int], work: Path, nmsg_only: bool = False) -> dict:
    """PSNR/SSIM/e-o FSC of NMSG (defaults) and the even/odd noise2noise U-Net on the dose-60
    tomogram for each training budget in ``steps`` (each in its own work folder, so no run resumes
    another's cosine schedule); the tomogram is the main benchmark's (simulated there if absent)."""
    folder = work / "dose60"
    if not (folder / "params.json").exists():
        raise SystemExit(f"{folder}: run bench_tomo.py first (the dose-60 tomogram)")
    vols = {k: read_mrc_volume(folder / f"{k}.mrc")[0] for k in ("noisy", "clean", "even", "odd", "oversmoothed")}
    voxel = json.loads((folder / "params.json").read_text())["config"]["acquisition"]["pixel_size"]
    rows = {"raw": scores(vols["noisy"], vols["even"], vols["odd"], vols["clean"], voxel)}
    for n in steps:
        config = dataclasses.replace(NMSG, steps=n)
        if not nmsg_only:
            t0 = time.time()
            n2n = train_even_odd(vols["even"], vols["odd"], config, work=folder / f"budget_n2n_{n}", progress=False)
            de, do = denoise_halves(n2n.network, vols["even"], vols["odd"], config)
            rows[f"noise2noise even/odd, {n} steps"] = {
                **scores((de + do) / 2, de, do, vols["clean"], voxel),
                "seconds": round(time.time() - t0, 1),
            }
        t0 = time.time()
        result = train_nmsg(
            vols["noisy"], config, vols["oversmoothed"], work=folder / f"budget_nmsg_{n}", progress=False
        )
        den = lambda v: denoise_with(result.network, v, config=config, synthesizer=None)  # noqa: E731
        rows[f"NMSG default, {n} steps"] = {
            **scores(den(vols["noisy"]), den(vols["even"]), den(vols["odd"]), vols["clean"], voxel),
            "seconds": round(time.time() - t0, 1),
        }
        for label in [k for k in rows if k.endswith(f", {n} steps")]:
            print(f"  {label}: {rows[label]}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (checks the script)")
    parser.add_argument("--work", default=str(HERE / "work" / "tomo"), help="work folder")
    parser.add_argument("--skip-speed", action="store_true", help="skip the 512 x 512 x 128 timing")
    parser.add_argument(
        "--speed-no-baseline", action="store_true", help="time the defaults only (no default-allocator baseline)"
    )
    parser.add_argument("--steps", type=int, default=NMSG.steps, help="training steps of every learned method")
    parser.add_argument("--real-steps", type=int, default=NMSG.steps, help="training steps on the real crops")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"simulated tomograms to run, of {', '.join(CASES)} (dense60: 36 particles placed)",
    )
    parser.add_argument("--only-default", action="store_true", help="NMSG with its defaults only (no variants)")
    parser.add_argument(
        "--budget-scan",
        metavar="N,N,...",
        help="only train NMSG and noise2noise for these step counts on the dose-60 tomogram",
    )
    parser.add_argument("--nmsg-only", action="store_true", help="with --budget-scan: NMSG only")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="only the 512 x 512 x 128 speed/memory run (results/<date>-tomo-speed-<host>.json)",
    )
    args = parser.parse_args(argv)
    if not all(s.exists() for s in STRUCTURES):
        print(f"bench_tomo: shared structures missing under {SHARED}; nothing to do")
        return 0
    work = Path(args.work) / ("quick" if args.quick else "full")
    if args.budget_scan:
        steps = [int(n) for n in args.budget_scan.split(",")]
        save(
            "tomo-budget" + ("-nmsg" if args.nmsg_only else ""),
            {"steps": steps, "dose60": budget_scan(steps, work, args.nmsg_only)},
        )
        return 0
    if args.speed_only:
        measured = speed(args, work)
        print(f"speed: {measured}")
        if not args.quick:
            save("tomo-speed", measured)
        return 0
    result = {"quick": args.quick, "simulated": {}}
    result["steps"] = args.steps
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)} (choose from {', '.join(CASES)})")
    for name in names:
        print(f"\nsimulated tomogram {name}: {CASES[name].describe(args.quick)}")
        rows, shown = simulated_case(name, CASES[name], args, work)
        result["simulated"][name] = rows
        print(f"{'method':<36} {'PSNR dB':>8} {'SSIM':>6} {'e/o FSC 0.5 Å':>14} {'0.143 Å':>8} {'s':>7}")
        for label, r in rows.items():
            print(
                f"{label:<36} {r['psnr_db']:8.2f} {r['ssim']:6.3f} {r['eo_fsc_0.5_A']:14.1f} "
                f"{r['eo_fsc_0.143_A']:8.1f} {r.get('seconds', float('nan')):7.1f}"
            )
        if name == "dose60" and not args.quick:
            slices_figure(
                list(shown.values()), list(shown), "simulated tomogram (ribosome + spliceosome), 60 e/Å²"
            ).savefig(DOCS / "tomo_simulated.png", dpi=70)
    if not args.skip_speed:
        result["speed"] = speed(args, work)
        print(f"\nspeed: {result['speed']}")
    result["real"] = real(args, work)
    print(f"\nreal crops: {result['real']}")
    if not args.quick:
        save("tomo", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
