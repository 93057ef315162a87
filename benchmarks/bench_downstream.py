"""What denoising buys a real picker: RELION's LoG autopicker on raw, Gaussian-filtered and denoised
micrographs, scored against expert picks.

Data: ``../shared/data/real_picked/empiar10028_ribosome/`` (10 real EMPIAR-10028 micrographs,
1024², about 5.36 Å/px, 865 expert picks; read from ../shared, never copied; skipped with the
reason when absent). Picker: ``relion_autopick --LoG`` (Debian's RELION 3.1, CPU), particle
diameter 250-350 Å (the 80S ribosome), dark particles (the data's contrast), run once per
method with a low threshold (``--LoG_adjust_threshold -1``); the threshold is then swept over the
picks' figure of merit and each method is reported at its own best F1 from that sweep (RELION's
LoG threshold cuts its FOM, and its neighbour suppression runs in FOM order, so this is the
threshold sweep; ``--check-threshold`` re-runs RELION at one threshold to show it). A pick
matches an unmatched expert pick within ``MATCH_RADIUS`` px (``score_picks``, strongest first;
half the 28-px disc radius of the
expert masks); the expert picks are not exhaustive, so precision is a lower bound for every
method alike. Methods: raw, Gaussian (sigma swept 1-4 px), the shipped general model, and the NT2C
coarse/fine models of an earlier ``bench_real_picked.py`` run when its work folder exists.

Not yet here (issue #37): the third-party simulation with known particles, Topaz's picker,
extraction from the raw micrographs, 2-D classes and a reconstruction.

  python bench_downstream.py            (make bench runs it)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import machine, save  # noqa: E402

from nt2c_core.evaluation.picking import score_picks  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"
DATA = SHARED / "real_picked" / "empiar10028_ribosome"
PIXEL = 5.36  # Å/px
DIAMETER = (250.0, 350.0)  # Å, LoG's search range for the ribosome
MATCH_RADIUS = 14.0  # px
SIGMAS = (1.0, 2.0, 3.0, 4.0)  # px, the Gaussian baseline's sweep
WORK = HERE / "work" / "downstream"
PICKED_RUN = HERE / "work" / "real_picked"  # bench_real_picked.py's work folder, if it ran

MICROGRAPHS_STAR = """
data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
opticsGroup1 1 {pixel} 300 2.0 0.1

data_micrographs

loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
{names}
"""


def expert_picks() -> dict[str, np.ndarray]:
    from nt2c_core.evaluation.coordinates import read_coordinates

    return {star.stem: read_coordinates(star).xy for star in sorted((DATA / "picks_derived").glob("*.star"))}


def write_method(name: str, images: dict[str, np.ndarray]) -> Path:
    """The method's micrographs as MRC files plus RELION's micrographs.star, in its own folder."""
    from nt2c_core.io import write_mrc

    folder = WORK / name
    for stem, image in images.items():
        if not (folder / f"{stem}.mrc").exists():
            write_mrc(folder / f"{stem}.mrc", image.astype(np.float32), PIXEL)
    names = "\n".join(f"{stem}.mrc 1" for stem in images)
    (folder / "micrographs.star").write_text(MICROGRAPHS_STAR.format(pixel=PIXEL, names=names))
    return folder


def log_pick(folder: Path, adjust: float = -1.0) -> tuple[dict, float]:
    """relion_autopick --LoG on a method's micrographs: ({stem: Picks}, seconds)."""
    from nt2c_core.evaluation.coordinates import read_coordinates

    out = folder / f"AutoPick_{adjust:g}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(
        ["relion_autopick", "--i", "micrographs.star", "--odir", out.name + "/", "--pickname", "autopick", "--LoG",
         "--LoG_diam_min", str(DIAMETER[0]), "--LoG_diam_max", str(DIAMETER[1]), "--angpix", str(PIXEL),
         "--LoG_adjust_threshold", str(adjust), "--shrink", "1"],
        cwd=folder, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"relion_autopick failed in {folder}:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
    seconds = time.perf_counter() - started
    return {p.name[: -len("_autopick.star")]: read_coordinates(p) for p in out.glob("*_autopick.star")}, seconds


def sweep(picks: dict, truth: dict[str, np.ndarray]) -> dict:
    """Precision/recall/F1 over every FOM threshold (pooled over micrographs); the best F1's row."""
    scores = np.concatenate([p.scores for p in picks.values() if len(p)]) if picks else np.zeros(0)
    total = sum(len(t) for t in truth.values())
    best = {"f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": None, "picks": 0}
    for threshold in np.unique(np.quantile(scores, np.linspace(0, 0.995, 200))) if len(scores) else []:
        tp = n = 0
        for stem, t in truth.items():
            p = picks.get(stem)
            if p is None:
                continue
            kept = p.above(threshold)
            found = kept.xy[np.argsort(-kept.scores)]  # strongest first, as score_picks matches in order
            tp += round(score_picks(found, t, MATCH_RADIUS).precision * len(found))
            n += len(kept)
        precision, recall = (tp / n if n else 0.0), tp / total
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        if f1 > best["f1"]:
            best = {"f1": f1, "precision": precision, "recall": recall, "threshold": float(threshold), "picks": n}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check-threshold", type=float, default=None, help="also run RELION at this adjust threshold")
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: the real picked data ({DATA}) is absent")
        return 0
    if shutil.which("relion_autopick") is None:
        print("skipped: relion_autopick not installed (apt-get install relion)")
        return 0
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    from nt2c_core.denoise import Denoiser
    from nt2c_core.general import general_model_path
    from nt2c_core.layout import WorkLayout

    truth = expert_picks()
    raw = {png.stem: np.asarray(Image.open(png), np.float32) for png in sorted((DATA / "images").glob("*.png"))}
    methods = {"raw": raw}
    for sigma in SIGMAS:
        methods[f"gaussian_{sigma:g}px"] = {k: gaussian_filter(v, sigma) for k, v in raw.items()}
    models = {"general": general_model_path()}
    layout = WorkLayout(PICKED_RUN / "run")
    for stage in ("coarse", "fine"):
        if Path(layout.model(stage)).is_file():
            models[f"nt2c_{stage}"] = layout.model(stage)
    denoise_seconds = {}
    for name, model in models.items():
        denoiser = Denoiser.from_file(model)
        started = time.perf_counter()
        methods[name] = {k: denoiser.denoise(v) for k, v in raw.items()}
        denoise_seconds[name] = round(time.perf_counter() - started, 1)
    table = {}
    for name, images in methods.items():
        picks, seconds = log_pick(write_method(name, images))
        table[name] = {**sweep(picks, truth), "log_seconds": round(seconds, 1)}
        print(name, table[name], flush=True)
    gaussians = {k: v for k, v in table.items() if k.startswith("gaussian")}
    best_gauss = max(gaussians, key=lambda k: gaussians[k]["f1"])
    check = None
    if args.check_threshold is not None:
        picks, _ = log_pick(WORK / "raw", args.check_threshold)
        check = {"adjust_threshold": args.check_threshold, "raw_picks": sum(len(p) for p in picks.values())}
    result = {
        "data": "EMPIAR-10028 (10 real micrographs, 865 expert picks), 5.36 Å/px",
        "picker": f"relion_autopick --LoG (RELION 3.1), diameter {DIAMETER[0]:g}-{DIAMETER[1]:g} Å, dark particles",
        "match_radius_px": MATCH_RADIUS,
        "methods": table,
        "best_gaussian": best_gauss,
        "denoised_minus_best_of_raw_and_gaussian": {
            m: round(table[m]["f1"] - max(table["raw"]["f1"], table[best_gauss]["f1"]), 4) for m in models
        },
        "denoised_minus_raw": {m: round(table[m]["f1"] - table["raw"]["f1"], 4) for m in models},
        "denoise_seconds": denoise_seconds,
        "threshold_check": check,
        "machine": machine(),
    }
    save("downstream-log", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
