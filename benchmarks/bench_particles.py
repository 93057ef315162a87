"""SR3 particle restoration (#18): quality against ground truth, 3-D reconstructions against the
true map, no invention of the training structures, speed and memory.

1. Training pairs (``nt2c_core.particles.simulate``): the shipped apoferritin 6z6u and proteasome
   3j9i plus the spliceosome 3jb9 (../shared/data/structures), 5 Å/px, box 64, half at each of two
   doses. Held out: the 70S ribosome 4v5d, never trained on, simulated at the same two doses.
2. Methods on the held-out particles: raw; Gaussian (best sigma against the truth: an oracle);
   the shipped general U-Net denoiser (micrographs, applied per particle); the NT2C U-Net trained on
   the same pairs with the same budget (MSE); SR3 without and with its post-processing U-Net.
   Scores: PSNR/SSIM against the clean (CTF-modulated) images; CTF-weighted direct Fourier
   reconstruction from each method's particles with the true orientations, FSC against the true
   ribosome map (0.143 and 0.5 crossings, Å) and against the training structures' maps (a model
   that paints its training structures would raise those).
3. Speed/memory: ``nt2c restore-particles`` with its defaults on 1,000 particles of 128², in a
   subprocess (wall time, peak RSS).
4. Real particles: boxes cut at the expert picks of the internal EMPIAR-10028 micrographs (80S
   ribosome, 5.36 Å/px, 8-bit exports; read from ../shared, never copied here), restored by the
   same model. No map or class averages at this pixel size exist here, so the check is the one a
   faithful restorer must pass: the restored particle low-passed at the particle scale agrees with
   the raw particle low-passed the same way (correlation), and the average of the restored
   particles agrees with the average of the raw ones. A figure goes to work/ (not committed).

Prints tables and writes ``results/<date>-particles-<host>.json`` and docs/particles.png.

  python bench_particles.py [--quick] [--steps N] [--train N] [--test N]    (make bench runs it)
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from _common import save  # noqa: E402
from scipy.ndimage import gaussian_filter, zoom  # noqa: E402

from nt2c_core.acquisition import Acquisition  # noqa: E402
from nt2c_core.data import APOFERRITIN, PROTEASOME  # noqa: E402
from nt2c_core.denoise import Denoiser  # noqa: E402
from nt2c_core.general import GENERAL_MODEL  # noqa: E402
from nt2c_core.io import read_mrc, write_mrc  # noqa: E402
from nt2c_core.metrics import fsc, psnr, ssim  # noqa: E402
from nt2c_core.models.store import load_model, save_model  # noqa: E402
from nt2c_core.particles.maps import density_map, reconstruct, spherical_mask  # noqa: E402
from nt2c_core.particles.simulate import simulate_particles  # noqa: E402
from nt2c_core.particles.sr3 import NormalizedStack, restore_images, save_restorer, train_restorer  # noqa: E402
from nt2c_core.settings import RESTORER, ParticleSimulationConfig  # noqa: E402
from nt2c_core.simulate.structure import load_structure  # noqa: E402
from nt2c_core.training import fit  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "structures"
HELD_OUT = SHARED / "4v5d_Tth_70S_ribosome.cif.gz"
EXTRA_TRAIN = SHARED / "3jb9_Spombe_spliceosome.cif.gz"
PIXEL, BOX, B_FACTOR = 5.0, 64, 60.0
DOSES = (4.0, 1.2)  # e/Å²: two SNRs (no radiation damage is simulated, so low doses stand for low SNR)
DOCS = ROOT / "docs"


def acquisition(dose: float) -> Acquisition:
    return Acquisition(pixel_size=PIXEL, dose=dose, b_factor=B_FACTOR)


def train_unet(noisy: np.ndarray, clean: np.ndarray, steps: int, batch: int, seed: int = 0):
    """The NT2C U-Net (width 24) trained on the same pairs, normalized as SR3's (MSE, Adam)."""
    y = NormalizedStack.of(noisy)
    x0 = (clean - y.mean[:, None, None]) / y.std[:, None, None]
    loop = dataclasses.replace(RESTORER.diffusion_loop(), steps=steps, lr=1e-3, settings="unet baseline")

    def make(step: int):
        rng = np.random.default_rng([seed, 41, step])
        idx = rng.integers(0, len(x0), batch)
        k = rng.integers(0, 4, batch)
        a = np.stack([np.rot90(y.data[i], j) for i, j in zip(idx, k)])[:, None]
        b = np.stack([np.rot90(x0[i], j) for i, j in zip(idx, k)])[:, None]
        return torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))

    def loss(network, a, b):
        return {"loss": torch.nn.functional.mse_loss(network(a).float(), b)}

    return fit(
        {"name": "unet", "width": 24, "first_kernel": 11}, make, loss, loop, None, "cpu", False, desc="unet"
    ).network


@torch.inference_mode()
def apply_unet(network, noisy: np.ndarray) -> np.ndarray:
    y = NormalizedStack.of(noisy)
    out = np.concatenate(
        [network(torch.from_numpy(y.data[i : i + 64])[:, None])[:, 0].numpy() for i in range(0, len(y.data), 64)]
    )
    return y.restore(out, 1.0)


def map_scores(volume: np.ndarray, maps: dict[str, np.ndarray]) -> dict:
    mask = spherical_mask(BOX, 0.45 * BOX)
    out = {}
    for name, ref in maps.items():
        curve = fsc(volume * mask, ref * mask, PIXEL)
        out[name] = {
            "fsc_0143_A": round(curve.resolution(0.143), 2),
            "fsc_05_A": round(curve.resolution(0.5), 2),
            "fsc_mean": round(float(curve.correlation.mean()), 3),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (checks the script, not the method)")
    p.add_argument("--steps", type=int, default=2000, help="diffusion U-Net training steps (post-processing: 1/4)")
    p.add_argument("--train", type=int, default=2000, help="training particles per dose")
    p.add_argument("--test", type=int, default=600, help="held-out particles per dose (all reconstructed)")
    p.add_argument(
        "--reconstruct",
        type=int,
        default=0,
        help="particles per reconstruction (default: all held-out particles); fewer put the map in a "
        "noise-limited regime where FSC 0.143 separates methods",
    )
    p.add_argument("--tag", default="", help="suffix of the result file (no figure is written with a tag)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--only-real", action="store_true", help="only part 4, with the restorer a full run saved")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.train, args.test = 40, 60, 40
    if not HELD_OUT.is_file():
        print(f"skipped: the held-out structure {HELD_OUT} is absent (needs ../shared/data)")
        return 0
    work = HERE / "work" / "particles"
    if args.only_real:
        out = real(work / "restorer.pt", work)
        if out:
            save("particles-real", {"real": out})
        return 0
    torch.manual_seed(0)
    train_structures = [APOFERRITIN, PROTEASOME] + ([EXTRA_TRAIN] if EXTRA_TRAIN.is_file() else [])
    models = [load_structure(s) for s in train_structures]
    ribosome = load_structure(HELD_OUT)
    work = HERE / "work" / "particles"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sets = [
        simulate_particles(
            models, ParticleSimulationConfig(acquisition(d), box=BOX, count=args.train, seed=100 + i), progress=False
        )
        for i, d in enumerate(DOSES)
    ]
    noisy = np.concatenate([s.noisy for s in sets])
    clean = np.concatenate([s.clean for s in sets])
    print(f"training pairs: {len(noisy)} ({', '.join(m.name for m in models)}), {time.time() - t0:.0f} s", flush=True)
    config = dataclasses.replace(
        RESTORER, steps=args.steps, refine_steps=max(args.steps // 4, 1), checkpoint_every=max(args.steps // 4, 1)
    )
    t0 = time.time()
    result = train_restorer(noisy, clean, config, work / f"sr3_{args.steps}", progress=False)
    sr3_seconds = time.time() - t0
    model_path = save_restorer(work / "restorer.pt", result, config, PIXEL, BOX, {"bench": "particles"})
    print(f"SR3 trained in {sr3_seconds:.0f} s", flush=True)
    t0 = time.time()
    unet_path = work / f"unet_{args.steps}.pt"
    if unet_path.exists():  # a finished baseline is reused (SR3 resumes from its checkpoints the same way)
        unet = load_model(unet_path)[0]
    else:
        unet = train_unet(noisy, clean, args.steps, config.batch_size)
        save_model(unet_path, unet, {"kind": "denoiser", "stage": "bench baseline", "pixel_size": PIXEL})
    unet_seconds = time.time() - t0
    print(f"U-Net baseline trained in {unet_seconds:.0f} s", flush=True)
    general = Denoiser.from_file(GENERAL_MODEL)
    maps = {"4v5d (held out)": density_map(ribosome, BOX, PIXEL, B_FACTOR)}
    maps.update({m.name: density_map(m, BOX, PIXEL, B_FACTOR) for m in models})
    results, shown = {}, {}
    for i, dose in enumerate(DOSES):
        test = simulate_particles(
            [ribosome],
            ParticleSimulationConfig(acquisition(dose), box=BOX, count=args.test, seed=200 + i),
            progress=False,
        )
        snr = float(test.clean.var() / (test.noisy - test.clean).var())
        k = min(200, len(test.noisy))
        sigmas = (0.75, 1.0, 1.5, 2.0, 3.0)
        best = max(
            sigmas,
            key=lambda s: np.mean([psnr(gaussian_filter(a, s), b) for a, b in zip(test.noisy[:k], test.clean[:k])]),
        )
        t0 = time.time()
        sr3_raw = restore_images(result.network, test.noisy, result.signal_scale, config, post=False, progress=False)
        sr3_post = restore_images(result.network, test.noisy, result.signal_scale, config, post=True, progress=False)
        sr3_time = time.time() - t0
        methods = {
            "raw": test.noisy,
            f"Gaussian (best sigma {best} px)": np.stack([gaussian_filter(a, best) for a in test.noisy]),
            "general U-Net (shipped)": np.stack([general.denoise(a) for a in test.noisy]),
            "U-Net trained on the same pairs": apply_unet(unet, test.noisy),
            "SR3 (no post-processing)": sr3_raw,
            "SR3 + post-processing": sr3_post,
        }
        rows = {}
        for name, images in methods.items():
            n = args.reconstruct or len(images)
            volume = reconstruct(images[:n], test.rotations[:n], acquisition(dose), test.defocus[:n], test.shifts[:n])
            rows[name] = {
                "psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(images[:k], test.clean[:k])])), 2),
                "ssim": round(float(np.mean([ssim(a, b) for a, b in zip(images[:k], test.clean[:k])])), 3),
                "maps": map_scores(volume, maps),
            }
            print(
                f"dose {dose} (SNR {snr:.3f}) {name}: PSNR {rows[name]['psnr_db']} dB, SSIM {rows[name]['ssim']}, "
                f"FSC vs truth 0.143/0.5: {rows[name]['maps']['4v5d (held out)']['fsc_0143_A']} / "
                f"{rows[name]['maps']['4v5d (held out)']['fsc_05_A']} Å; mean FSC vs training maps "
                + ", ".join(f"{m} {v['fsc_mean']}" for m, v in rows[name]["maps"].items() if m != "4v5d (held out)"),
                flush=True,
            )
            if i == len(DOSES) - 1:
                shown[name] = (images[:6], volume)
        results[f"dose_{dose}"] = {
            "snr": round(snr, 4),
            "particles": args.test,
            "reconstructed": args.reconstruct or args.test,
            "sr3_restore_seconds": round(sr3_time, 1),
            "methods": rows,
        }
        if i == len(DOSES) - 1:
            shown["truth"] = (test.clean[:6], maps["4v5d (held out)"])
    payload = {
        "settings": {
            "pixel_size": PIXEL,
            "box": BOX,
            "b_factor": B_FACTOR,
            "doses": DOSES,
            "train_structures": [m.name for m in models],
            "held_out": ribosome.name,
            "train_particles": len(noisy),
            "restorer": dataclasses.asdict(config),
        },
        "training_seconds": {"sr3": round(sr3_seconds, 1), "unet": round(unet_seconds, 1)},
        "results": results,
    }
    if not args.skip_speed:
        payload["speed"] = speed(model_path, work, 100 if args.quick else 1000)
    payload["real"] = real(model_path, work)
    if not args.tag:
        figure(shown, args.quick)
    save("particles" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else ""), payload)
    return 0


def speed(model: Path, work: Path, count: int) -> dict:
    """``nt2c restore-particles`` with defaults on ``count`` particles of 128² (simulated ribosome
    particles of 64² upsampled 2x: the time does not depend on the content)."""
    stack = work / f"speed_{count}x128.mrcs"
    if not stack.exists():
        sim = simulate_particles(
            [load_structure(HELD_OUT)],
            ParticleSimulationConfig(acquisition(DOSES[0]), box=BOX, count=min(count, 200), seed=300),
            progress=False,
        )
        big = np.stack([zoom(a, 2, order=1) for a in sim.noisy])
        write_mrc(stack, np.resize(big, (count, 128, 128)).astype(np.float32), PIXEL)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.time()
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "nt2c"),
            "-q",
            "restore-particles",
            str(stack),
            "-o",
            str(work / "speed_out"),
            "--model",
            str(model),
            "--device",
            "cpu",
        ],
        check=True,
    )
    seconds = time.time() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = read_mrc(work / "speed_out" / stack.with_suffix("").name.__add__("_restored.mrcs"), allow_stack=True)[0]
    print(f"speed: {count} particles of 128² in {seconds:.0f} s, peak RSS {max(rss, before) / 1e6:.2f} GB", flush=True)
    return {
        "particles": count,
        "box": 128,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(max(rss, before) / 1e6, 2),
        "sample_steps": RESTORER.sample_steps,
        "samples": RESTORER.samples,
        "finite": bool(np.isfinite(out).all()),
    }


def real(model: Path, work: Path) -> dict:
    """Part 4 (see the module doc); {} when the internal real data are absent."""
    from PIL import Image

    from nt2c_core.particles.sr3 import Restorer

    data = ROOT.parent / "shared" / "data" / "real_picked" / "empiar10028_ribosome"
    if not (data / "images").is_dir():
        print(f"real particles: skipped ({data} absent)")
        return {}
    box, pixel, radius = BOX, 5.36, 28.0
    raws = []
    for png in sorted((data / "images").glob("*.png")):
        image = np.asarray(Image.open(png), np.float32)
        picks = np.loadtxt(data / "picks_derived" / f"{png.stem}.star", skiprows=7, usecols=(1, 2), ndmin=2)
        for x, y in np.rint(picks).astype(int):
            if box // 2 <= x < image.shape[1] - box // 2 and box // 2 <= y < image.shape[0] - box // 2:
                raws.append(image[y - box // 2 : y + box // 2, x - box // 2 : x + box // 2])
    raws = np.stack(raws)
    restorer = Restorer(model, post=True)
    t0 = time.time()
    methods = {
        "raw": raws,
        "Gaussian 1 px": np.stack([gaussian_filter(a, 1.0) for a in raws]),
        "general U-Net (shipped)": np.stack([Denoiser.from_file(GENERAL_MODEL).denoise(a) for a in raws]),
        "SR3 + post-processing": restorer.restore(raws, progress=False),
    }
    seconds = time.time() - t0
    sigma = radius / 3
    low = np.stack([gaussian_filter(a, sigma) for a in raws])
    mean_raw = raws.mean(0)
    out = {
        "particles": len(raws),
        "pixel_size": pixel,
        "model_pixel_size": PIXEL,
        "seconds": round(seconds, 1),
        "lowpass_sigma_px": round(sigma, 2),
        "methods": {},
    }
    for name, images in methods.items():
        agree = [float(np.corrcoef(gaussian_filter(a, sigma).ravel(), b.ravel())[0, 1]) for a, b in zip(images, low)]
        average = float(np.corrcoef(images.mean(0).ravel(), mean_raw.ravel())[0, 1])
        out["methods"][name] = {
            "lowpass_agreement": round(float(np.mean(agree)), 4),
            "average_agreement": round(average, 4),
        }
        print(
            f"real particles ({len(raws)}), {name}: low-pass agreement {np.mean(agree):.4f}, "
            f"average agreement {average:.4f}",
            flush=True,
        )
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0 * len(methods), 8))
    for j, (name, images) in enumerate(methods.items()):
        for i in range(4):
            ax = fig.add_subplot(4, len(methods), i * len(methods) + j + 1)
            ax.imshow(images[i], cmap="gray", vmin=np.percentile(images[i], 1), vmax=np.percentile(images[i], 99))
            ax.axis("off")
            if i == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(work / "real_particles.png", dpi=80)  # internal data: stays in work/, never in docs/
    return out


def figure(shown: dict, quick: bool) -> None:
    from matplotlib.figure import Figure

    names = list(shown)
    fig = Figure(figsize=(2.0 * len(names), 2.0 * 5))
    for j, name in enumerate(names):
        images, volume = shown[name]
        for i in range(4):
            ax = fig.add_subplot(5, len(names), i * len(names) + j + 1)
            a = images[i]
            ax.imshow(a, cmap="gray", vmin=np.percentile(a, 1), vmax=np.percentile(a, 99))
            ax.axis("off")
            if i == 0:
                ax.set_title(name.replace(" (", "\n("), fontsize=7)
        ax = fig.add_subplot(5, len(names), 4 * len(names) + j + 1)
        sl = volume[:, :, BOX // 2]
        ax.imshow(sl, cmap="gray")
        ax.axis("off")
    fig.suptitle("held-out ribosome particles (low dose) and central slices of their reconstructions", fontsize=9)
    fig.tight_layout()
    target = DOCS / ("particles_quick.png" if quick else "particles.png")
    if not quick:
        fig.savefig(target, dpi=80)


if __name__ == "__main__":
    sys.exit(main())
