"""Restorers judged where they could help: poses unknown, found by RELION on restored images,
the map reconstructed by RELION from the RAW images with those poses (issue #38).

Particles come from a third-party simulation (``third_party/particles.py``: ttsim3d potential,
torch-fourier-slice projections, torch-ctf CTF, Poisson counts; run in the benchmark's external
virtualenv), of the restorer's training structure and of a structure it never saw. The restorers
are trained the user's way on ``nt2c simulate-particles`` of the training structure only, at the
dose that gives the same particle SNR.

For each structure, SNR and arm (raw, oracle Gaussian, U-Net trained on the same pairs, SR3):
``relion_refine --auto_refine`` (CPU, one process) on the arm's images from the same 30-Å
low-passed true map, then ``relion_reconstruct --ctf`` from the raw images with the poses found
(all particles, and each random half): FSC 0.143 against the true map and between the halves, the
median angular error of the poses. Also: the invention check of ``nt2c restore-particles``
(matched noise) and SR3 on the simulation's pure-noise images (the same score), and the
cross-structure imposition (a map from the restored images of the unseen structure with the true
poses, its correlation with the training structure's map, against raw's).

  python bench_poses.py [--quick] [--snr 0.1 0.02] [--count 1000]

Writes results/DATE-poses[-quick]-HOST.json and prints a table.
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

import mrcfile  # noqa: E402
import starfile  # noqa: E402
import torch  # noqa: E402
from _common import save  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from nt2c_core.acquisition import Acquisition  # noqa: E402
from nt2c_core.io import write_mrc  # noqa: E402
from nt2c_core.metrics import fsc, psnr  # noqa: E402
from nt2c_core.particles.invention import correlation_scores  # noqa: E402
from nt2c_core.particles.maps import spherical_mask  # noqa: E402
from nt2c_core.particles.simulate import simulate_particle_files  # noqa: E402
from nt2c_core.particles.sr3 import Restorer, restore_particles, train_restorer_files  # noqa: E402
from nt2c_core.settings import RESTORER, ParticleSimulationConfig  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "structures"
TRAIN = SHARED / "3j9i_T20S_proteasome.pdb.gz"
UNSEEN = SHARED / "4v1w_horse_apoferritin.cif.gz"
EXTERNAL = HERE / ".venv-external" / "bin" / "python"
PIXEL, BOX, DIAMETER = 4.0, 64, 200  # Å/px, px, Å (the particle mask of relion_refine)


MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def run(cmd: list, cwd: Path, log: Path) -> None:
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(map(str, cmd)) + "\n")
        fh.flush()
        done = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **MPI_ENV}
        )
    if done.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}); see {log}")


def third_party(structure: Path, out: Path, snr: float, count: int, seed: int, noise: int) -> dict:
    if not (out / "params.json").exists():
        run(
            [EXTERNAL, HERE / "third_party" / "particles.py", structure, "-o", out, "--count", count, "--snr", snr,
             "--box", BOX, "--pixel-size", PIXEL, "--seed", seed, "--noise-images", noise],
            HERE, out.parent / f"{out.name}.log",
        )  # fmt: skip
    return json.loads((out / "params.json").read_text())


def stack(path: Path) -> np.ndarray:
    return mrcfile.read(path).astype(np.float32)


def training_dose(snr: float, config: ParticleSimulationConfig, work: Path) -> float:
    """The dose at which ``nt2c simulate-particles`` gives particle SNR ``snr`` (var clean / var
    noise over the box; shot noise: SNR grows with the dose), from a 64-particle probe at 40 e/Å²."""
    probe = work / "probe"
    if not (probe / "clean.mrcs").exists():
        simulate_particle_files([TRAIN], dataclasses.replace(config, count=64), probe, progress=False)
    clean, noisy = stack(probe / "clean.mrcs"), stack(probe / "particles.mrcs")
    measured = float(clean.var() / (noisy - clean).var())
    return config.acquisition.dose * snr / measured


def write_arm(images: np.ndarray, star: Path, out: Path, name: str) -> Path:
    """An arm's images as OUT/NAME.mrcs and a copy of ``star`` pointing at them."""
    write_mrc(out / f"{name}.mrcs", images, PIXEL)
    table = starfile.read(star, always_dict=True)
    table["particles"]["rlnImageName"] = [f"{i + 1:06d}@{name}.mrcs" for i in range(len(images))]
    starfile.write(table, out / f"{name}.star", overwrite=True)
    return out / f"{name}.star"


def refine(star: Path, reference: Path, out: Path, threads: int, iterations: int | None) -> Path:
    """relion_refine 3-D auto-refine from the low-passed reference; the final data STAR."""
    out.mkdir(parents=True, exist_ok=True)
    final = out / "run_data.star"
    if final.exists():
        return final
    # RELION 3.1 splits the random halves only under MPI: 3 processes (a leader and one per half)
    cmd = ["mpirun", "--oversubscribe", "-np", 3, "relion_refine_mpi",
           "--i", star, "--o", out / "run", "--ref", reference, "--ini_high", 30, "--ctf",
           "--particle_diameter", DIAMETER, "--flatten_solvent", "--zero_mask", "--oversampling", 1,
           "--healpix_order", 2, "--auto_local_healpix_order", 4, "--offset_range", 4, "--offset_step", 2,
           "--sym", "C1", "--low_resol_join_halves", 40, "--norm", "--scale", "--j", max(1, threads // 2), "--pad", 2,
           "--dont_combine_weights_via_disc", "--pool", 10, "--random_seed", 0, "--firstiter_cc",
           "--auto_refine", "--split_random_halves"]  # fmt: skip
    run(cmd, star.parent, out / "refine.log")
    if not final.exists():
        raise RuntimeError(f"relion_refine wrote no {final}")
    return final


def reconstruct_raw(data_star: Path, raw_star: Path, out: Path, threads: int) -> dict:
    """relion_reconstruct --ctf from the raw images with the poses of ``data_star`` (whole set and
    each half)."""
    found = starfile.read(data_star, always_dict=True)
    raw = starfile.read(raw_star, always_dict=True)["particles"]
    table = found["particles"].copy()
    order = {n.split("@")[0]: i for i, n in enumerate(raw["rlnImageName"])}
    table["rlnImageName"] = [raw["rlnImageName"][order[n.split("@")[0]]] for n in table["rlnImageName"]]
    star = raw_star.parent / f"{out.name}_raw_poses.star"
    starfile.write({"optics": found["optics"], "particles": table}, star, overwrite=True)
    maps = {}
    for part, extra in (("all", []), ("half1", ["--subset", 1]), ("half2", ["--subset", 2])):
        path = out / f"raw_{part}.mrc"
        if not path.exists():
            run(["relion_reconstruct", "--i", star, "--o", path, "--ctf", "--j", threads, *extra], raw_star.parent,
                out / "reconstruct.log")  # fmt: skip
        maps[part] = mrcfile.read(path).astype(np.float32)
    return maps, table


def angular_error(found, truth) -> float:
    """Median angle [deg] between found and true orientations (RELION's angles)."""
    from scipy.spatial.transform import Rotation

    def rot(t):
        return Rotation.from_euler("ZYZ", np.stack([t["rlnAngleRot"], t["rlnAngleTilt"], t["rlnAnglePsi"]], 1),
                                   degrees=True)  # fmt: skip

    order = {n.split("@")[0]: i for i, n in enumerate(truth["rlnImageName"])}
    truth = truth.iloc[[order[n.split("@")[0]] for n in found["rlnImageName"]]]
    return float(np.degrees(np.median((rot(found) * rot(truth).inv()).magnitude())))


def map_scores(volume: np.ndarray, truth: np.ndarray, halves: tuple | None = None) -> dict:
    mask = spherical_mask(BOX, 0.45 * BOX)
    curve = fsc(volume * mask, truth * mask, PIXEL)
    out = {
        "fsc_0143_truth_A": round(curve.resolution(0.143), 2),
        "cc_truth": round(float(np.corrcoef((volume * mask).ravel(), (truth * mask).ravel())[0, 1]), 3),
    }
    if halves is not None:
        out["fsc_0143_halves_A"] = round(fsc(halves[0] * mask, halves[1] * mask, PIXEL).resolution(0.143), 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and training budgets (a smoke run)")
    p.add_argument("--snr", type=float, nargs="+", default=[0.1, 0.02])
    p.add_argument("--count", type=int, default=1000, help="third-party particles per structure and SNR")
    p.add_argument("--train-count", type=int, default=4000, help="nt2c-simulated training particles")
    p.add_argument("--steps", type=int, default=RESTORER.steps, help="SR3 diffusion steps (U-Net: the same)")
    p.add_argument("--refine-steps", type=int, default=RESTORER.refine_steps)
    p.add_argument("--arms", nargs="+", default=["raw", "gaussian", "unet", "sr3"])
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    p.add_argument("--work", default=str(HERE / "work" / "poses"))
    args = p.parse_args(argv)
    if args.quick:
        args.count, args.train_count, args.steps, args.refine_steps = 400, 800, 300, 100
    torch.set_num_threads(args.threads)
    work = Path(args.work) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    base = ParticleSimulationConfig(
        Acquisition(voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1, pixel_size=PIXEL, dose=40.0),
        box=BOX, count=args.train_count, defocus_range_um=(1.0, 2.5), max_shift=2.0, seed=11,
    )  # fmt: skip
    results, t_start = {"settings": vars(args), "cases": {}}, time.time()
    for snr in args.snr:
        tag = f"snr{snr:g}"
        dose = training_dose(snr, base, work)
        sim = work / f"nt2c_pairs_{tag}"
        config = dataclasses.replace(base, acquisition=dataclasses.replace(base.acquisition, dose=dose))
        if not (sim / "clean.mrcs").exists():
            simulate_particle_files([TRAIN], config, sim, progress=False)
        noisy_t, clean_t = stack(sim / "particles.mrcs"), stack(sim / "clean.mrcs")
        train_snr = float(clean_t.var() / (noisy_t - clean_t).var())
        models, seconds = {}, {}
        for method in [m for m in ("sr3", "unet") if m in args.arms]:  # the user's route for both
            models[method] = work / f"{method}_{tag}.pt"
            t0 = time.time()
            if not models[method].exists():
                cfg = dataclasses.replace(RESTORER, method=method, steps=args.steps, refine_steps=args.refine_steps)
                train_restorer_files(sim, models[method], cfg, work / f"{method}_{tag}.work", progress=False)
            seconds[method] = round(time.time() - t0, 1)
        print(f"{tag}: training dose {dose:.2f} e/Å² (SNR {train_snr:.3f}), training {seconds} s", flush=True)
        maps = {}
        for name, structure, seed in (("train", TRAIN, 1), ("unseen", UNSEEN, 2)):
            case = work / f"{name}_{tag}"
            params = third_party(structure, case, snr, args.count, seed, 300 if name == "train" else 0)
            truth_star = starfile.read(case / "particles.star", always_dict=True)["particles"]
            truth = mrcfile.read(case / "map.mrc").astype(np.float32)
            maps[name] = truth
            lowpassed = case / "reference_30A.mrc"
            if not lowpassed.exists():
                run(["relion_image_handler", "--i", case / "map.mrc", "--o", lowpassed, "--lowpass", 30, "--angpix",
                     PIXEL], case, case / "handler.log")  # fmt: skip
            raw, clean = stack(case / "particles.mrcs"), stack(case / "clean.mrcs")
            sigmas = (0.5, 1.0, 1.5, 2.0, 3.0)
            gauss = [np.mean([psnr(gaussian_filter(a, s), b) for a, b in zip(raw[:200], clean[:200])]) for s in sigmas]
            sigma = sigmas[int(np.argmax(gauss))]
            images = {"raw": raw}
            if "gaussian" in args.arms:
                images["gaussian"] = np.stack([gaussian_filter(a, sigma) for a in raw]).astype(np.float32)
            checks = {}
            for method, path in models.items():  # restore-particles, with its invention check
                done = restore_particles([case / "particles.star"], case / method, path, progress=False)
                images[method] = stack(done.outputs[0])
                checks[method] = done.invention.to_dict() if done.invention else None
            entry = {"third_party": params, "gaussian_sigma_px": sigma, "invention_check": checks, "arms": {}}
            for arm, data in images.items():
                star = case / "particles.star" if arm == "raw" else write_arm(data, case / "particles.star", case, arm)
                scores = {"psnr_dB": round(float(np.mean([psnr(a, b) for a, b in zip(data, clean)])), 2)}
                t0 = time.time()
                try:
                    found_star = refine(star, lowpassed, case / f"refine_{arm}", args.threads, None)
                    volumes, found = reconstruct_raw(found_star, case / "particles.star", case / f"refine_{arm}",
                                                     args.threads)  # fmt: skip
                    scores.update(map_scores(volumes["all"], truth, (volumes["half1"], volumes["half2"])))
                    scores["median_angular_error_deg"] = round(angular_error(found, truth_star), 2)
                except RuntimeError as exc:
                    scores["error"] = str(exc)
                scores["refine_seconds"] = round(time.time() - t0, 1)
                entry["arms"][arm] = scores
                print(f"  {name} {tag} {arm}: {scores}", flush=True)
                results["cases"][f"{name}_{tag}"] = entry  # a stopped run keeps what it measured
                save("poses-quick" if args.quick else "poses", {**results, "partial": True})
            if name == "train" and "sr3" in args.arms:  # the simulation's own pure-noise images
                noise = stack(case / "noise.mrcs")
                restorer = Restorer(models["sr3"])
                against = restorer.references  # the training references stored in the model file
                entry["pure_noise"] = {
                    "restored": correlation_scores(restorer.restore(noise, progress=False), *against),
                    "raw": correlation_scores(noise, *against),
                }
            if name == "unseen" and "sr3" in args.arms:  # imposition: true poses, restored vs raw images
                imposed = {}
                for arm in ("raw", "sr3"):
                    star = case / ("particles.star" if arm == "raw" else "sr3.star")
                    if arm == "sr3" and not star.exists():
                        write_arm(images["sr3"], case / "particles.star", case, "sr3")
                    path = case / f"true_poses_{arm}.mrc"
                    if not path.exists():
                        run(["relion_reconstruct", "--i", star, "--o", path, "--ctf", "--j", args.threads], case,
                            case / "reconstruct.log")  # fmt: skip
                    volume = mrcfile.read(path).astype(np.float32)
                    mask = spherical_mask(BOX, 0.45 * BOX)
                    imposed[arm] = {
                        "cc_with_training_map": round(
                            float(np.corrcoef((volume * mask).ravel(), (maps["train"] * mask).ravel())[0, 1]), 3
                        ),
                        **map_scores(volume, truth),
                    }
                entry["cross_structure"] = imposed
                print(f"  cross-structure {tag}: {imposed}", flush=True)
            results["cases"][f"{name}_{tag}"] = entry
        results["cases"][f"training_{tag}"] = {"dose": dose, "snr": train_snr, "training_seconds": seconds}
    results["seconds"] = round(time.time() - t_start, 1)
    save("poses-quick" if args.quick else "poses", {**results, "partial": False})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
