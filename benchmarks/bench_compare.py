"""NT2C side by side with Topaz-Denoise and classical filters: quality, picking, speed, memory.

Run with ``make bench`` (it builds the Topaz/BM3D virtualenv first), or
  python benchmarks/bench_compare.py [--work DIR] [--real MIC.mrc ...] [--external-python PY]

What it does, all in one run, on this machine:
1. NT2C models: the demo pipeline (``nt2c demo``: 20S proteasome, 2 Å/px, K3, 40 e/Å², the demo's
   "experimental" noise) gives the coarse and fine models; the shipped general model is used as is.
2. Held-out simulated test set, never used in training or tuning: spliceosome 3jb9 (not globular)
   and horse apoferritin 4v1w, each at 2 doses (20, 50 e/Å²) x 2 defoci (1.0, 2.5 µm), 2
   micrographs of 512^2 each, with the demo's acquisition and experimental noise process.
   A separate validation set (proteasome, other seeds) picks the Gaussian sigma.
3. Methods: raw; low-pass (2x binning, bilinear back to full size); Gaussian (sigma from the
   validation set); BM3D (bm3d 4.0.3, sigma = noise std estimated per micrograph with
   skimage.restoration.estimate_sigma); Topaz general model (``unet``, patch 1024, padding 500:
   the CLI defaults); NT2C coarse; NT2C fine; NT2C general. Every output is compared to the truth
   after the same least-squares scale/offset fit (``nt2c_core.metrics``): PSNR, SSIM, FRC 0.5 /
   0.143 resolution.
4. Picking: the same DoG blob picker (``nt2c_core.evaluation.picking``; radius = the particle's radius,
   threshold 3 robust-std units, fixed for every method) on each output; precision/recall/F1
   against the true centres within half a particle radius.
5. Real data: the 4096^2 micrograph in ../shared/data (and any ``--real``), 3x binned to 2 Å/px
   (the NT2C models' pixel size), through every method; eq. 5 SNR over fixed signal/background
   region pairs stored in benchmarks/regions/ (made once by ``--make-regions``, rule in
   :func:`make_regions`); before/after crops at one contrast stretch.
6. Cost: wall time (median of ``--repeats`` after a warm-up) and peak RSS of each method on the
   real 4096^2 micrograph, each in its own process. BM3D is timed on a 1024^2 crop and scaled x16
   (marked). NT2C training cost per stage from the demo's run.
Outputs: benchmarks/results/<date>-<machine>-compare.json and .md, and PNG plots next to them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nt2c_core.evaluation.picking import score_picks
from nt2c_core.layout import DONE, WorkLayout

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
REAL_DEFAULT = SHARED / "micrographs" / "epu2.9_example.mrc"
REGIONS = HERE / "regions"
HELD_OUT = {"spliceosome_3jb9": "3jb9_Spombe_spliceosome.cif.gz", "apoferritin_4v1w": "4v1w_horse_apoferritin.cif.gz"}
DOSES = (20.0, 50.0)
DEFOCI = (1.0, 2.5)
GAUSS_SIGMAS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
TOPAZ = {"model": "unet", "patch_size": 1024, "padding": 500}
PICK_THRESHOLD = 3.0
REAL_BIN = 3
INTERNAL = ("raw", "lowpass2x", "gaussian", "nt2c_coarse", "nt2c_fine", "nt2c_general")
EXTERNAL = ("bm3d", "topaz")
COST_METHODS = ("lowpass2x", "gaussian", "nt2c_fine")
PICK_INPUTS = ("raw", "topaz", "nt2c_fine", "nt2c_general")
TOPAZ_PICK_SCALE = 2


# --- data ---------------------------------------------------------------------------------------


def make_test_set(work: Path) -> tuple[Path, dict]:
    """Held-out micrographs, flattened into work/test/{raw,truth}/<condition>__exp_000i.mrc plus
    coords/<same>.npy (x, y px) and radius per file [px]."""
    from nt2c_core.demo import ACQUISITION
    from nt2c_core.io import read_mrc, read_star, write_mrc
    from nt2c_core.simulate import SimulationConfig
    from nt2c_core.simulate.experimental import make_experimental_dataset
    from nt2c_core.simulate.structure import load_structure

    flat = work / "test"
    radii = {}
    for k, (name, file) in enumerate(HELD_OUT.items()):
        structure = SHARED / "structures" / file
        radius_px = load_structure(structure).radius / ACQUISITION.pixel_size
        for dose in DOSES:
            for defocus in DEFOCI:
                cond = f"{name}_dose{dose:g}_df{defocus:g}"
                acq = type(ACQUISITION)(**{**ACQUISITION.to_dict(), "dose": dose})
                cfg = SimulationConfig(
                    acq,
                    size=(512, 512),
                    particles=8,
                    defocus_um=(defocus, defocus),
                    count=2,
                    seed=1000 + 10 * k + int(dose) + int(defocus * 10),
                )
                folder = work / "conditions" / cond
                if not (folder / "experimental.json").exists():
                    make_experimental_dataset([structure], cfg, folder, progress=False)
                for path in sorted((folder / "raw").glob("*.mrc")):
                    key = f"{cond}__{path.stem}"
                    radii[key] = radius_px
                    if (flat / "raw" / f"{key}.mrc").exists():
                        continue
                    write_mrc(flat / "truth" / f"{key}.mrc", read_mrc(folder / "truth" / path.name)[0], acq.pixel_size)
                    stars = read_star(folder / "coords" / f"{path.stem}.star")
                    (flat / "coords").mkdir(parents=True, exist_ok=True)
                    np.save(
                        flat / "coords" / f"{key}.npy", np.stack([stars["rlnCoordinateX"], stars["rlnCoordinateY"]], 1)
                    )
                    write_mrc(flat / "raw" / f"{key}.mrc", read_mrc(path)[0], acq.pixel_size)
    return flat, radii


def make_validation_set(work: Path) -> Path:
    from nt2c_core.data import PROTEASOME
    from nt2c_core.demo import ACQUISITION
    from nt2c_core.simulate import SimulationConfig
    from nt2c_core.simulate.experimental import make_experimental_dataset

    folder = work / "validation"
    if not (folder / "experimental.json").exists():
        cfg = SimulationConfig(ACQUISITION, size=(512, 512), particles=10, defocus_um=(1.0, 3.0), count=4, seed=4242)
        make_experimental_dataset([PROTEASOME], cfg, folder, progress=False)
    return folder


def binned_real(path: Path, work: Path) -> Path:
    """The real micrograph binned REAL_BIN x (mean pooling) to the NT2C models' pixel size."""
    from nt2c_core.denoise import bin_image
    from nt2c_core.io import read_mrc, write_mrc

    out = work / "real" / f"{path.stem}_bin{REAL_BIN}.mrc"
    if not out.exists():
        image, pixel = read_mrc(path)
        write_mrc(out, bin_image(image, REAL_BIN), pixel * REAL_BIN)
    return out


def make_regions(image: np.ndarray, count: int = 40, box: int = 24, radius: float = 6.0) -> list:
    """The fixed eq. 5 regions of a real micrograph, chosen once by this rule and stored: the
    ``count`` strongest DoG blobs (radius px) of the raw micrograph smoothed by a Gaussian of
    sigma 2 px are the signal boxes; each one's background is the nearest box clear of every
    blob (``nt2c_core.metrics.regions_from_coordinates``)."""
    from scipy.ndimage import gaussian_filter

    from nt2c_core.evaluation.picking import pick_blobs
    from nt2c_core.metrics import regions_from_coordinates

    picks = pick_blobs(gaussian_filter(image.astype(np.float64), 2.0), radius, threshold=PICK_THRESHOLD, edge_px=box)
    return regions_from_coordinates(image.shape, picks, box, radius, limit=count)


# --- methods ------------------------------------------------------------------------------------


def internal_method(name: str, work: Path, sigma: float | None = None):
    """image -> image for the methods run in this process (None when unavailable)."""
    from scipy.ndimage import gaussian_filter, zoom

    from nt2c_core.denoise import Denoiser, TileSettings, bin_image
    from nt2c_core.general import GENERAL_MODEL

    demo = WorkLayout(work / "demo" / "work")
    models = {"nt2c_coarse": demo.model("coarse"), "nt2c_fine": demo.model("fine"), "nt2c_general": GENERAL_MODEL}
    if name == "raw":
        return lambda x: x
    if name == "lowpass2x":

        def lowpass(x):
            small = bin_image(x, 2)
            big = zoom(small, 2, order=1)
            out = np.zeros_like(x)
            out[: big.shape[0], : big.shape[1]] = big[: x.shape[0], : x.shape[1]]
            return out

        return lowpass
    if name == "gaussian":
        return lambda x: gaussian_filter(x.astype(np.float64), sigma).astype(np.float32)
    if not models[name].is_file():
        return None
    denoiser = Denoiser.from_file(models[name], "cpu", TileSettings())
    return denoiser.denoise


def run_internal(fn, inputs: list[Path], out: Path) -> dict:
    from nt2c_core.io import read_mrc, write_mrc

    seconds = {}
    for path in inputs:
        image, pixel = read_mrc(path)
        t = time.perf_counter()
        result = fn(image)
        seconds[path.name] = time.perf_counter() - t
        write_mrc(out / path.name, np.asarray(result, np.float32), pixel)
    return seconds


def run_external(method: str, inputs: list[Path], out: Path, python: str, extra: list[str]) -> dict:
    cmd = [python, str(HERE / "external_runner.py"), method, *map(str, inputs), "-o", str(out), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed: {done.stderr[-800:]}")
    return json.loads((out / "run.json").read_text())


def noise_sigmas(inputs: list[Path]) -> dict:
    from skimage.restoration import estimate_sigma

    from nt2c_core.io import read_mrc

    return {p.name: float(estimate_sigma(read_mrc(p)[0].astype(np.float64))) for p in inputs}


def best_gaussian_sigma(validation: Path) -> float:
    from scipy.ndimage import gaussian_filter

    from nt2c_core.io import read_mrc
    from nt2c_core.metrics import psnr

    pairs = [
        (read_mrc(p)[0], read_mrc(validation / "truth" / p.name)[0]) for p in sorted((validation / "raw").glob("*.mrc"))
    ]
    scores = {s: np.mean([psnr(gaussian_filter(x.astype(np.float64), s), y) for x, y in pairs]) for s in GAUSS_SIGMAS}
    return float(max(scores, key=scores.get))


# --- metrics ------------------------------------------------------------------------------------


def score_test(method_dir: Path, test: Path, radii: dict) -> dict:
    from nt2c_core.evaluation.picking import pick_blobs
    from nt2c_core.io import read_mrc
    from nt2c_core.metrics import frc, psnr, ssim

    rows = {}
    for path in sorted((test / "raw").glob("*.mrc")):
        pred, pixel = read_mrc(method_dir / path.name)
        truth = read_mrc(test / "truth" / path.name)[0]
        curve = frc(pred, truth, pixel)
        radius = radii[path.stem]
        picks = pick_blobs(pred, radius, threshold=PICK_THRESHOLD)
        pick = score_picks(picks, np.load(test / "coords" / f"{path.stem}.npy"), 0.5 * radius)
        rows[path.stem] = {
            "psnr_db": psnr(pred, truth),
            "ssim": ssim(pred, truth),
            "frc_0.5_A": curve.resolution(0.5),
            "frc_0.143_A": curve.resolution(0.143),
            "frc_curve": [curve.frequency.tolist(), curve.correlation.tolist()],
            **pick.to_dict(),
        }
    return rows


def mean_frc(rows: dict) -> list:
    """[frequencies (1/Å), mean FRC] over the micrographs; the per-micrograph curves are dropped
    from ``rows`` (they would make the result file megabytes)."""
    curves = [r.pop("frc_curve") for r in rows.values()]
    return [curves[0][0], np.mean([c[1] for c in curves], axis=0).tolist()]


def summarize(rows: dict) -> dict:
    out = {}
    for key in ("psnr_db", "ssim", "frc_0.5_A", "frc_0.143_A", "precision", "recall", "f1"):
        values = np.array([r[key] for r in rows.values()], float)
        finite = values[np.isfinite(values)]
        out[key] = {
            "mean": float(finite.mean()) if len(finite) else None,
            "std": float(finite.std()) if len(finite) else None,
            "n": int(len(finite)),
        }
    by_condition: dict[str, list] = {}
    for name, r in rows.items():
        by_condition.setdefault(name.split("__")[0], []).append(r["psnr_db"])
    out["psnr_by_condition"] = {c: float(np.mean(v)) for c, v in sorted(by_condition.items())}
    return out


def real_snr(method_dir: Path, real_files: list[Path]) -> dict:
    from nt2c_core.io import read_mrc
    from nt2c_core.metrics import snr_eq5

    out = {}
    for path in real_files:
        regions = json.loads((REGIONS / f"{path.stem}.json").read_text())["pairs"]
        pairs = [(tuple(s), tuple(b)) for s, b in regions]
        out[path.name] = snr_eq5(read_mrc(method_dir / path.name)[0], pairs)
    return out


# --- cost ---------------------------------------------------------------------------------------


def cost_worker(method: str, path: str, repeats: int, work: Path, sigma: float) -> None:
    """Run in a child process: time ``method`` on one micrograph; print JSON."""
    import resource

    from nt2c_core.io import read_mrc

    fn = internal_method(method, work, sigma)
    image = read_mrc(path)[0]
    fn(np.ascontiguousarray(image[:1024, :1024]))  # warm-up, excluded
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            {
                "seconds_median": statistics.median(times),
                "seconds_all": times,
                "repeats": repeats,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            }
        )
    )


def measure_cost(real: Path, work: Path, sigma: float, repeats: int, python: str | None) -> dict:
    from nt2c_core.io import read_mrc, write_mrc

    out = {}
    for method in COST_METHODS:
        if method.startswith("nt2c") and internal_method(method, work) is None:
            continue
        cmd = [
            sys.executable,
            __file__,
            "--cost-worker",
            method,
            "--input",
            str(real),
            "--repeats",
            str(repeats),
            "--work",
            str(work),
            "--sigma",
            str(sigma),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        out[method] = (
            json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-500:]}
        )
        print(f"[cost] {method}: {out[method]}", flush=True)
    if python:
        cost_dir = work / "cost"
        topaz = run_external(
            "topaz",
            [real],
            cost_dir / "topaz",
            python,
            [
                "--patch-size",
                str(TOPAZ["patch_size"]),
                "--padding",
                str(TOPAZ["padding"]),
                "--repeats",
                str(max(1, repeats // 3)),
            ],
        )
        out["topaz"] = {
            "seconds_median": topaz["seconds"][real.name],
            "repeats": topaz["repeats"],
            "peak_rss_gb": topaz["peak_rss_gb"],
            "settings": topaz["settings"],
        }
        crop = cost_dir / "crop1024.mrc"
        image, pixel = read_mrc(real)
        write_mrc(crop, image[:1024, :1024], pixel)
        sig = cost_dir / "crop_sigma.json"
        sig.write_text(json.dumps(noise_sigmas([crop])))
        bm = run_external("bm3d", [crop], cost_dir / "bm3d", python, ["--sigmas", str(sig)])
        out["bm3d"] = {
            "seconds_median": 16 * bm["seconds"][crop.name],
            "peak_rss_gb": bm["peak_rss_gb"],
            "note": "timed on a 1024^2 crop, x16",
            "repeats": 1,
        }
        print(f"[cost] topaz: {out['topaz']}\n[cost] bm3d: {out['bm3d']}", flush=True)
    for same in ("nt2c_coarse", "nt2c_general"):  # the same U-Net (width 24) as the fine model
        if "nt2c_fine" in out:
            out[same] = {**out["nt2c_fine"], "note": "same network size as nt2c_fine; not timed separately"}
    return out


def training_cost(demo_work: Path) -> dict:
    """Seconds per NT2C stage of the demo run, as the pipeline recorded them."""
    from nt2c_core.pipeline import stage_seconds

    return stage_seconds(demo_work)


def topaz_picking(work: Path, test: Path, radii: dict, python: str, methods=PICK_INPUTS) -> dict:
    """Topaz's pretrained resnet16 picker with its own preprocessing (TOPAZ_PICK_SCALE x down-
    sampling, GMM normalization) on raw and denoised held-out micrographs, one structure at a time
    (radius = the particle's, down-sampled). Picks with log-likelihood ratio >= 0 ("more likely a
    particle than not") are matched to the true centres within half a radius."""
    groups: dict[str, list[str]] = {}
    for key in sorted(radii):
        groups.setdefault(key.split("_dose")[0], []).append(key)
    out = {}
    for method in methods:
        source = work / "out" / method / "test"
        if not source.is_dir():
            continue
        rows = []
        for structure, keys in groups.items():
            folder = work / "topaz_pick" / method / structure
            picks = folder / "picks.txt"
            if not picks.exists():
                _topaz_pick(python, [source / f"{k}.mrc" for k in keys], folder, radii[keys[0]])
            table = _read_picks(picks)
            for k in keys:
                mine = sorted((r for r in table if r[0] == k and r[3] >= 0), key=lambda r: -r[3])
                xy = np.array([(r[1], r[2]) for r in mine], float).reshape(-1, 2)
                rows.append(score_picks(xy, np.load(test / "coords" / f"{k}.npy"), 0.5 * radii[k]).to_dict())
        out[method] = {key: float(np.mean([r[key] for r in rows])) for key in ("precision", "recall", "f1")}
        print(f"[bench] topaz resnet16 picking on {method}: {out[method]}", flush=True)
    return out


def _topaz_pick(python: str, files: list[Path], folder: Path, radius_px: float) -> None:
    pre = folder / "pre"
    pre.mkdir(parents=True, exist_ok=True)
    scale = str(TOPAZ_PICK_SCALE)
    _run([python, "-m", "topaz.commands.preprocess", "-s", scale, "-d", "-1", "-o", str(pre), *map(str, files)])
    _run(
        [
            python,
            "-m",
            "topaz.commands.extract",
            "-m",
            "resnet16",
            "-r",
            str(max(1, round(radius_px / TOPAZ_PICK_SCALE))),
            "-p",
            "512",
            "-d",
            "-1",
            "-x",
            scale,
            "-t",
            "-6",
            "-o",
            str(folder / "picks.txt"),
            *sorted(map(str, pre.glob("*.mrc"))),
        ]
    )


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {done.stderr[-500:]}")


def _read_picks(path: Path) -> list[tuple[str, float, float, float]]:
    lines = path.read_text().splitlines()[1:]
    return [(f[0], float(f[1]), float(f[2]), float(f[3])) for f in (line.split("\t") for line in lines) if len(f) == 4]


def batch_throughput(real: Path, work: Path, count: int = 20, threads: int = 2) -> dict:
    """``nt2c denoise`` (fine model) on a batch of ``count`` copies of the real 4096^2 micrograph,
    in a child process: micrographs per minute, its peak RSS."""
    folder = work / "batch"
    (folder / "in").mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        link = folder / "in" / f"mic_{i:02d}.mrc"
        if not link.exists():
            link.symlink_to(real.resolve())
        files.append(str(link))
    nt2c = str(Path(sys.executable).parent / "nt2c")
    cmd = [
        nt2c,
        "denoise",
        *files,
        "--model",
        str(WorkLayout(work / "demo" / "work").model("fine")),
        "-o",
        str(folder / "out"),
        "--overwrite",
        "--threads",
        str(threads),
    ]
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "rc = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
        "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6)"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    rc, seconds, rss = done.stdout.split()
    if rc != "0":
        return {"error": f"nt2c denoise exited {rc}"}
    return {
        "micrographs": count,
        "seconds": float(seconds),
        "per_minute": 60 * count / float(seconds),
        "peak_rss_gb": float(rss),
        "model": "nt2c_fine (width 24)",
        "threads": threads,
    }


# --- report -------------------------------------------------------------------------------------


def write_report(result: dict, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    stem.with_suffix(".md").write_text(markdown_table(result))
    plots(result, stem)


def markdown_table(result: dict) -> str:
    lines = [
        "| method | PSNR dB (held-out) | SSIM | FRC 0.143 (Å) | picking F1 "
        "| real eq.5 SNR dB | s / 4096² | peak RSS GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, data in result["methods"].items():
        if "error" in data:
            lines.append(f"| {method} | failed: {data['error'][:60]} | | | | | | |")
            continue
        s = data["test"]
        cost = result["cost"].get(method, {})
        real = data.get("real_snr_db", {})
        real_text = ", ".join(f"{v:.2f}" for v in real.values()) if real else "-"
        mark = "*" if cost.get("note", "").startswith("timed on") else ("†" if "note" in cost else "")
        secs = f"{cost['seconds_median']:.1f}{mark}" if "seconds_median" in cost else "-"
        rss = f"{cost['peak_rss_gb']:.2f}" if "peak_rss_gb" in cost else "-"
        lines.append(
            f"| {method} | {s['psnr_db']['mean']:.2f} ± {s['psnr_db']['std']:.2f} | {s['ssim']['mean']:.3f} | "
            f"{_fmt(s['frc_0.143_A']['mean'])} | {s['f1']['mean']:.2f} | {real_text} | {secs} | {rss} |"
        )
    lines.append("")
    lines.append(
        "Held-out: spliceosome 3jb9 and horse apoferritin 4v1w, doses 20/50 e/Å², defoci 1.0/2.5 µm, 2 "
        "micrographs each (16), 512² at 2 Å/px. Real: eq. 5 SNR on the 3x-binned real micrograph. Cost: the "
        "real 4096² micrograph on this CPU; * BM3D timed on 1024² and scaled x16; † same network as "
        "nt2c_fine, not timed separately."
    )
    picking = result.get("topaz_resnet16_picking", {})
    if picking and "error" not in picking:
        lines.append("")
        lines.append(
            "Topaz resnet16 picker (its preprocessing, LLR >= 0), F1 by input: "
            + ", ".join(f"{m} {v['f1']:.2f}" for m, v in picking.items())
        )
    batch = result.get("batch_throughput", {})
    if "per_minute" in batch:
        lines.append("")
        lines.append(
            f"Batch: nt2c denoise on {batch['micrographs']} x 4096² in {batch['seconds']:.0f} s "
            f"({batch['per_minute']:.2f} micrographs/min, peak RSS {batch['peak_rss_gb']:.2f} GB, "
            f"{batch['threads']} threads)."
        )
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def plots(result: dict, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m, d in result["methods"].items() if "error" not in d]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    psnr = [result["methods"][m]["test"]["psnr_db"] for m in methods]
    axes[0].bar(methods, [p["mean"] for p in psnr], yerr=[p["std"] for p in psnr], color="C0")
    axes[0].set_ylim(min(p["mean"] for p in psnr) - 2, max(p["mean"] for p in psnr) + 1)
    axes[0].set_ylabel("PSNR vs truth (dB)")
    axes[0].set_title("held-out simulated")
    snr = [np.mean(list(result["methods"][m].get("real_snr_db", {0: np.nan}).values())) for m in methods]
    axes[1].bar(methods, snr, color="C1")
    axes[1].set_ylabel("eq. 5 SNR (dB)")
    axes[1].set_title("real micrograph (rewards blur: read with PSNR/FRC)")
    for m in methods:
        f, c = result["methods"][m]["frc_mean_curve"]
        axes[2].plot(f, c, label=m)
    axes[2].axhline(0.143, color="k", lw=0.5)
    axes[2].axhline(0.5, color="k", lw=0.5)
    axes[2].set_xlabel("spatial frequency (1/Å)")
    axes[2].set_ylabel("FRC vs truth")
    axes[2].legend(fontsize=7)
    for m, p in zip(methods, psnr):
        cost = result["cost"].get(m, {}).get("seconds_median")
        if cost:
            axes[3].scatter(cost, p["mean"])
            axes[3].annotate(m, (cost, p["mean"]), fontsize=8)
    axes[3].set_xscale("log")
    axes[3].set_xlabel("seconds per 4096² micrograph (CPU)")
    axes[3].set_ylabel("PSNR (dB)")
    for ax in axes[:2]:
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(stem.parent / f"{stem.name}.png", dpi=80)
    plt.close(fig)


def before_after(work: Path, methods: list[str], real: Path, out: Path) -> None:
    """Same crop of the binned real micrograph through every method, each standardized over the
    whole micrograph and shown at one stretch (-3..3 std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nt2c_core.io import read_mrc

    fig, axes = plt.subplots(2, (len(methods) + 1) // 2, figsize=(3.2 * ((len(methods) + 1) // 2), 6.6))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, m in zip(axes.ravel(), methods):
        image = read_mrc(work / "out" / m / "real" / real.name)[0].astype(np.float64)
        image = (image - image.mean()) / image.std()
        h, w = image.shape
        ax.imshow(image[h // 2 - 200 : h // 2 + 200, w // 2 - 200 : w // 2 + 200], cmap="gray", vmin=-3, vmax=3)
        ax.set_title(m, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=60)
    plt.close(fig)


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(HERE / "work"), help="work folder (demo models, data, outputs)")
    p.add_argument("--real", nargs="*", default=[], help="more real micrographs (2/3 Å/px x 3 binning assumed)")
    p.add_argument(
        "--external-python",
        default=str(HERE / ".venv-external" / "bin" / "python"),
        help="Python of the virtualenv holding Topaz and BM3D ('' to skip them)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method for the cost (median)")
    p.add_argument("--make-regions", action="store_true", help="(re)write the eq. 5 regions of the real micrographs")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(INTERNAL + EXTERNAL),
        choices=INTERNAL + EXTERNAL,
        help="methods to run (outputs of earlier runs in the work folder are reused)",
    )
    p.add_argument("--no-cost", action="store_true", help="skip the speed/memory measurements")
    p.add_argument("--no-picking", action="store_true", help="skip Topaz's resnet16 picker")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every method")
    p.add_argument("--report-only", metavar="JSON", help="redraw the table and plots of a result file")
    p.add_argument("--cost-worker", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--sigma", type=float, default=2.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    work = Path(args.work)
    if args.cost_worker:
        cost_worker(args.cost_worker, args.input, args.repeats, work, args.sigma)
        return 0
    if args.report_only:
        stem = Path(args.report_only).with_suffix("")
        write_report(json.loads(Path(args.report_only).read_text()), stem)
        return 0
    if not (SHARED / "structures").is_dir():
        print(f"held-out structures not found in {SHARED / 'structures'}: cannot run")
        return 1
    python = args.external_python if args.external_python and Path(args.external_python).exists() else None
    if python is None:
        print("[bench] no Topaz/BM3D virtualenv: those methods are reported as not run (make bench builds it)")
    t0 = time.time()
    import torch

    from nt2c_core.demo import run_demo
    from nt2c_core.io import read_mrc

    torch.set_num_threads(args.threads)
    needs_demo = any(m in ("nt2c_coarse", "nt2c_fine") for m in args.methods)
    if needs_demo and not WorkLayout(work / "demo" / "work").done("denoised").exists():
        print("[bench] training the NT2C demo models (nt2c demo)", flush=True)
        run_demo(work / "demo")
    test, radii = make_test_set(work)
    validation = make_validation_set(work)
    sigma = best_gaussian_sigma(validation)
    reals = [binned_real(Path(r), work) for r in ([REAL_DEFAULT] if REAL_DEFAULT.exists() else []) + args.real]
    for r in reals:
        target = REGIONS / f"{r.stem}.json"
        if args.make_regions or not target.exists():
            pairs = make_regions(read_mrc(r)[0])
            REGIONS.mkdir(exist_ok=True)
            target.write_text(
                json.dumps(
                    {"rule": make_regions.__doc__.split("\n\n")[0].strip(), "source": r.name, "pairs": pairs}, indent=0
                )
            )
    test_inputs = sorted((test / "raw").glob("*.mrc"))
    result = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": _machine(),
        "settings": {
            "held_out": HELD_OUT,
            "doses": DOSES,
            "defoci_um": DEFOCI,
            "gaussian_sigma_px": sigma,
            "topaz": TOPAZ,
            "pick_threshold": PICK_THRESHOLD,
            "pick_distance": "0.5 x radius",
            "real_binning": REAL_BIN,
            "normalization": "least-squares scale/offset to truth",
        },
        "methods": {},
    }
    for method in args.methods:
        print(f"[bench] {method}", flush=True)
        out = work / "out" / method
        try:
            marker = out / DONE
            if marker.exists():  # outputs of an earlier run of this benchmark (same work folder)
                seconds = json.loads(marker.read_text())
            elif method in INTERNAL:
                fn = internal_method(method, work, sigma)
                if fn is None:
                    raise RuntimeError("model not available")
                seconds = run_internal(fn, test_inputs, out / "test")
                run_internal(fn, reals, out / "real")
            elif python is None:
                raise RuntimeError("external virtualenv not built")
            else:
                extra = (
                    ["--patch-size", str(TOPAZ["patch_size"]), "--padding", str(TOPAZ["padding"])]
                    if method == "topaz"
                    else []
                )
                if method == "bm3d":
                    sig = work / "sigmas.json"
                    sig.write_text(json.dumps(noise_sigmas(test_inputs + reals)))
                    extra = ["--sigmas", str(sig)]
                extra += ["--threads", str(args.threads)]
                seconds = run_external(method, test_inputs, out / "test", python, extra)["seconds"]
                run_external(method, reals, out / "real", python, extra)
            if not marker.exists():
                marker.write_text(json.dumps(seconds))
            rows = score_test(out / "test", test, radii)
            curve = mean_frc(rows)
            result["methods"][method] = {
                "test": summarize(rows),
                "frc_mean_curve": curve,
                "per_micrograph": rows,
                "real_snr_db": real_snr(out / "real", reals),
                "seconds_per_512px_mic": float(np.median(list(seconds.values()))),
            }
            s = result["methods"][method]["test"]
            print(
                f"[bench] {method}: PSNR {s['psnr_db']['mean']:.2f} dB, F1 {s['f1']['mean']:.2f}, real SNR "
                f"{result['methods'][method]['real_snr_db']}",
                flush=True,
            )
        except Exception as exc:  # a failing method is reported; the others go on
            result["methods"][method] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"[bench] {method} FAILED: {exc}", flush=True)
    if reals and not args.no_cost:
        result["cost"] = measure_cost(
            REAL_DEFAULT if REAL_DEFAULT.exists() else Path(args.real[0]), work, sigma, args.repeats, python
        )
    result["cost"] = result.get("cost", {})
    if python and not args.no_picking:
        try:
            result["topaz_resnet16_picking"] = topaz_picking(work, test, radii, python)
        except Exception as exc:  # reported, the rest goes on
            result["topaz_resnet16_picking"] = {"error": f"{type(exc).__name__}: {exc}"}
    if reals and not args.no_cost:
        result["batch_throughput"] = batch_throughput(
            REAL_DEFAULT if REAL_DEFAULT.exists() else Path(args.real[0]), work, threads=args.threads
        )
        print(f"[bench] batch: {result['batch_throughput']}", flush=True)
    result["training_cost_s"] = training_cost(work / "demo" / "work")
    result["gpu"] = "none on this machine: GPU throughput not measured"
    result["seconds_total"] = round(time.time() - t0, 1)
    stem = HERE / "results" / f"{datetime.date.today().isoformat()}-{_machine()['host']}-compare"
    write_report(result, stem)
    done = [m for m in result["methods"] if "error" not in result["methods"][m]]
    if reals:
        before_after(work, done, reals[0], stem.parent / f"{stem.name}-real.png")
    print(markdown_table(result))
    print(f"[bench] wrote {stem}.json/.md/.png")
    return 0


def _machine() -> dict:
    import platform
    import socket

    import torch

    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


if __name__ == "__main__":
    sys.exit(main())
