"""Real micrographs with expert picks: does NT2C beat the general model, Topaz and a Gaussian?

Data: ``../shared/data/real_picked/empiar10028_ribosome/`` (10 real EMPIAR-10028 micrographs,
1024², about 5.36 Å/px, 865 expert picks; internal evaluation only: read from ../shared, never
copied into the repository; the benchmark skips with a reason when it is absent). The PNGs are
written as MRC files into ``benchmarks/work/real_picked/raw`` (ignored by git).

One full ``nt2c run`` (defaults of this package: mask-rule noise patches, coarse from the general
model, model choice) with the 4v5d ribosome (the nearest structure available: a bacterial 70S,
smaller than the 80S), CPU budgets. Then every method goes through the same measures:
- eq. 5 SNR (paper) on regions at the expert picks (box 32 px, background boxes clear of every
  pick disc of 28 px), which rewards blur, so always next to
- DoG picking average precision against the expert picks (ranked by DoG score; a pick matches an
  unmatched expert pick within 14 px), and
- the low-pass agreement with the raw micrograph (``nt2c_core.selection``), which falls when a
  model erases or invents particle-sized structure, and the residual raw - output checks
  (correlation with the output at the particle scale, particle-band power against the run's real
  noise patches).
Methods: raw, Gaussian (sigma 2 px), Topaz's general model (if ``make bench`` built its
virtualenv), the shipped general model, NT2C coarse and fine, and the model the run chose.

  python bench_real_picked.py [--quick] [--reuse]    (make bench runs it)
  python bench_real_picked.py --tag mixed --set mix_shipped=true   (a variant in its own folder)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import RESULTS, machine, save  # noqa: E402

from nt2c_core.layout import WorkLayout  # noqa: E402
from nt2c_core.pipeline import stage_seconds  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"
DATA = SHARED / "real_picked" / "empiar10028_ribosome"
STRUCTURE = SHARED / "structures" / "4v5d_Tth_70S_ribosome.cif.gz"
PIXEL = 5.36
RADIUS = 28.0
WORK = HERE / "work" / "real_picked"
EXT_PYTHON = HERE / ".venv-external" / "bin" / "python"


def convert(work: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    """MRC copies of the PNGs (same orientation as the picks: row 0 at the top) and the picks."""
    from PIL import Image

    from nt2c_core.io import write_mrc

    files, picks = [], {}
    for png in sorted((DATA / "images").glob("*.png")):
        out = work / "raw" / f"{png.stem}.mrc"
        if not out.exists():
            write_mrc(out, np.asarray(Image.open(png), np.float32), PIXEL)
        files.append(out)
        star = DATA / "picks_derived" / f"{png.stem}.star"
        picks[png.stem] = np.loadtxt(star, skiprows=7, usecols=(1, 2), ndmin=2)
    return files, picks


def pipeline_config(files: list[Path], quick: bool):
    from nt2c_core.noise.synthesize import GANConfig
    from nt2c_core.pipeline import PipelineConfig
    from nt2c_core.settings import COARSE_TRANSFER, FINE, TRAINING_CARBON_FRACTION, replace
    from nt2c_core.simulate import Acquisition, SimulationConfig

    scale = 0.1 if quick else 1.0
    steps = lambda n: max(int(n * scale), 10)  # noqa: E731
    acquisition = Acquisition(voltage_kv=300, cs_mm=2.0, pixel_size=PIXEL, dose=20.0, detector="K2")
    return PipelineConfig(
        raw=[str(p) for p in files],
        structures=[str(STRUCTURE)],
        simulation=SimulationConfig(
            acquisition,
            defocus_um=(1.0, 3.5),
            size=(512, 512),
            particles=20,
            count=16 if quick else 48,
            library_size=100,
            seed=0,
            carbon_fraction=TRAINING_CARBON_FRACTION,
        ),
        coarse=replace(
            COARSE_TRANSFER,
            steps=steps(800),
            batch_size=8,
            crop=128,
            width=24,
            val_every=steps(200),
            checkpoint_every=steps(200),
        ),
        gan=GANConfig(
            iterations=steps(800), batch_size=16, width=16, log_every=steps(100), checkpoint_every=steps(200)
        ),
        fine=replace(
            FINE, steps=steps(500), batch_size=8, crop=128, width=24, val_every=steps(100), checkpoint_every=steps(100)
        ),
        device="cpu",
    )


def run_nt2c(
    files: list[Path], quick: bool, reuse: bool, tag: str = "", changes: dict | None = None
) -> tuple[Path, dict]:
    """The full ``nt2c run`` through the CLI (as a user runs it), timed per stage; ``changes``:
    top-level pipeline settings of a variant (its run and outputs go under ``tag``)."""
    work = WORK / f"nt2c{tag}"
    if not reuse:  # a new run: its models' earlier outputs must go too
        import shutil

        for folder in (work, WORK / "methods" / f"nt2c_coarse{tag}", WORK / "methods" / f"nt2c_fine{tag}"):
            shutil.rmtree(folder, ignore_errors=True)
    config = WORK / f"nt2c{tag}.json"
    settings = pipeline_config(files, quick).to_dict()
    for key, value in (changes or {}).items():  # dotted keys reach into sections: simulation.carbon_fraction
        *path, last = key.split(".")
        section = settings
        for part in path:
            section = section[part]
        section[last] = value
    config.write_text(json.dumps(settings, indent=2))
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "nt2c_core.cli", "run", str(config), "--work", str(work)],
        cwd=HERE.parent,
        text=True,
        capture_output=True,
    )
    (WORK / f"nt2c{tag}_run.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"nt2c run failed:\n{done.stderr[-2000:]}")
    seconds = time.perf_counter() - t0
    stages = json.loads((work / "pipeline.json").read_text())["stages"]
    return work, {"wall_s": round(seconds, 1), "stages": stages}


def denoise_all(name: str, fn, files: list[Path], out: Path) -> dict[str, np.ndarray]:
    from nt2c_core.io import read_mrc, write_mrc

    images = {}
    for path in files:
        target = out / name / path.name
        if target.exists():
            images[path.stem] = read_mrc(target)[0]
            continue
        images[path.stem] = fn(read_mrc(path)[0]).astype(np.float32)
        write_mrc(target, images[path.stem], PIXEL)
    return images


def topaz(files: list[Path], out: Path) -> dict[str, np.ndarray] | None:
    from nt2c_core.io import read_mrc

    if not EXT_PYTHON.exists():
        print(f"Topaz skipped: {EXT_PYTHON} not found (make bench builds it)")
        return None
    folder = out / "topaz"
    if not all((folder / p.name).exists() for p in files):
        cmd = [
            str(EXT_PYTHON),
            str(HERE / "external_runner.py"),
            "topaz",
            *map(str, files),
            "-o",
            str(folder),
            "--patch-size",
            "1024",
            "--padding",
            "500",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"Topaz failed: {done.stderr[-600:]}")
            return None
    return {p.stem: read_mrc(folder / p.name)[0] for p in files}


def average_precision(image: np.ndarray, truth: np.ndarray, radius: float = RADIUS) -> float:
    """DoG picks ranked by score (threshold 0), matched one-to-one within radius/2 to the
    expert picks in rank order; AP = mean precision at each true match, over all expert picks."""
    from nt2c_core.evaluation.picking import pick_blobs

    picks = pick_blobs(image, radius, threshold=0.0, dark=True)
    free = np.ones(len(truth), bool)
    hits, precisions = 0, []
    for rank, p in enumerate(picks, start=1):
        d = np.hypot(*(truth - p).T)
        d[~free] = np.inf
        j = int(np.argmin(d)) if len(d) else -1
        if j >= 0 and d[j] <= radius / 2:
            free[j] = False
            hits += 1
            precisions.append(hits / rank)
    return float(np.sum(precisions) / len(truth)) if len(truth) else 0.0


def measure(
    images: dict[str, np.ndarray],
    raw: dict[str, np.ndarray],
    picks: dict[str, np.ndarray],
    noise_patches: np.ndarray | None,
) -> dict:
    """eq. 5 SNR, DoG AP, low-pass agreement, and the residual raw - output checks of
    ``nt2c_core.selection.residual_checks`` (against the run's real noise patches)."""
    from nt2c_core.metrics import regions_from_coordinates, snr_eq5
    from nt2c_core.selection import lowpass_agreement, residual_checks

    snr, ap, agree, corr, excess = [], [], [], [], []
    for name, image in images.items():
        pairs = regions_from_coordinates(image.shape, picks[name], 32, RADIUS)
        snr.append(snr_eq5(image, pairs))
        ap.append(average_precision(image, picks[name]))
        agree.append(lowpass_agreement(raw[name], image, RADIUS))
        c, e = residual_checks(raw[name], image, RADIUS, noise_patches)
        corr.append(c)
        excess += [e] if e is not None else []
    return {
        "eq5_snr_db": round(float(np.mean(snr)), 2),
        "picking_ap": round(float(np.mean(ap)), 3),
        "lowpass_agreement": round(float(np.mean(agree)), 4),
        "residual_correlation": round(float(np.mean(corr)), 3),
        "residual_band_excess": round(float(np.mean(excess)), 3) if excess else None,
        "micrographs": len(images),
        "picking_ap_per_micrograph": [round(float(a), 4) for a in ap],
    }


def paired_ap(table: dict, method: str, baseline: str, resamples: int = 10000, seed: int = 0) -> dict:
    """AP of ``method`` minus ``baseline``, paired by micrograph: the mean difference, its 95 %
    bootstrap interval (micrographs resampled with replacement) and on how many micrographs
    ``method`` is ahead. With 10 micrographs this says whether a difference of AP is larger than
    the spread between micrographs."""
    diff = np.subtract(table[method]["picking_ap_per_micrograph"], table[baseline]["picking_ap_per_micrograph"])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(len(diff), size=(resamples, len(diff)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "method": method,
        "baseline": baseline,
        "mean": round(float(diff.mean()), 4),
        "ci95": [round(float(lo), 4), round(float(hi), 4)],
        "ahead": int((diff > 0).sum()),
        "of": len(diff),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tenth of the training budgets (plumbing check)")
    p.add_argument("--reuse", action="store_true", help="reuse an earlier nt2c run and outputs in the work folder")
    p.add_argument("--tag", default="", help="name of a variant: its own run folder and result file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="pipeline setting of the variant, e.g. mix_shipped=true or simulation.carbon_fraction=0.25 (repeatable)",
    )
    args = p.parse_args()
    changes = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    tag = f"-{args.tag}" if args.tag else ""
    if not DATA.is_dir() or not STRUCTURE.is_file():
        print(f"skipped: the real picked data ({DATA}) or the 4v5d structure is absent")
        return 0
    from scipy.ndimage import gaussian_filter

    from nt2c_core.denoise import Denoiser
    from nt2c_core.general import general_model_path
    from nt2c_core.io import read_mrc

    WORK.mkdir(parents=True, exist_ok=True)
    files, picks = convert(WORK)
    work, run = run_nt2c(files, args.quick, args.reuse, tag, changes)
    out = WORK / "methods"
    raw = denoise_all("raw", lambda x: x, files, out)
    methods = {"raw": raw, "gaussian_2px": denoise_all("gaussian_2px", lambda x: gaussian_filter(x, 2.0), files, out)}
    topaz_images = topaz(files, out)
    if topaz_images is not None:
        methods["topaz_general"] = topaz_images
    layout = WorkLayout(work)
    for name, model in (
        ("general", general_model_path()),
        ("nt2c_coarse", layout.model("coarse")),
        ("nt2c_fine", layout.model("fine")),
    ):
        if Path(model).is_file():
            folder = name if name == "general" else name + tag  # a variant's own models, own outputs
            methods[name] = denoise_all(folder, Denoiser.from_file(model).denoise, files, out)
    chosen = run["stages"]["denoised"]["chosen"]
    methods[f"nt2c_chosen ({chosen})"] = {p.stem: read_mrc(layout.denoised / p.name)[0] for p in files}
    stack = layout.noise_patches
    patches = read_mrc(stack, allow_stack=True)[0] if stack.is_file() else None
    table = {name: measure(images, raw, picks, patches) for name, images in methods.items()}
    noise = run["stages"]["noise"]
    ours = [m for m in table if m.startswith("nt2c_")]
    comparisons = [paired_ap(table, m, b) for m in ours for b in ("raw", "topaz_general", "general") if b in table]
    result = {
        "data": "EMPIAR-10028 (10 micrographs, 865 expert picks), 4v5d structure",
        "quick": args.quick,
        "variant": changes,
        "wall_s": run["wall_s"],
        "stage_seconds": stage_seconds(work),
        "noise_patches": {
            k: noise.get(k) for k in ("patches", "patch", "rule", "free_fraction", "band_power_ratio", "insufficient")
        },
        "selection": run["stages"]["denoised"].get("selection", {}),
        "methods": table,
        "ap_differences": comparisons,
        "machine": machine(),
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=2))
    path = save("real-picked" + tag, result)
    (RESULTS / (path.stem + ".md")).write_text(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = [
        "| method | eq. 5 SNR (dB) | DoG picking AP | low-pass agreement | residual correlation "
        "| residual band excess |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["methods"].items():
        excess = "-" if row["residual_band_excess"] is None else f"{row['residual_band_excess']:.2f}"
        lines.append(
            f"| {name} | {row['eq5_snr_db']:.2f} | {row['picking_ap']:.3f} | {row['lowpass_agreement']:.4f} "
            f"| {row['residual_correlation']:.3f} | {excess} |"
        )
    noise = result["noise_patches"]
    lines += [
        "",
        f"Noise patches: {noise['patches']} of {noise['patch']} px ({noise['rule']} rule); "
        f"band-power ratio {noise['band_power_ratio']}.",
        f"Stage seconds: {result['stage_seconds']}.",
        f"Model choice: {result['selection'].get('reason', '-')}",
        "",
        "Picking AP differences, paired by micrograph (mean, 95 % bootstrap interval, micrographs ahead):",
        "",
    ]
    lines += [
        f"- {c['method']} - {c['baseline']}: {c['mean']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], "
        f"ahead on {c['ahead']} of {c['of']}"
        for c in result.get("ap_differences", [])
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
