"""``make demo`` / ``nt2c demo``: the whole NT2C pipeline on an embedded default data set, on CPU.

1. "Experimental" micrographs of the 20S proteasome (``simulate/experimental.py``): noise from a
   richer process than the training simulator (ice-thickness gradient, gain-reference stripes,
   correlated detector noise), ground truth kept aside.
2. ``nt2c run`` on them: simulate training pairs of the same structure with the same acquisition,
   coarse U-Net, SSIM noise-patch extraction, WGAN-GP noise model, re-weighted fine U-Net, denoise.
3. A report: ``report.json`` with PSNR/SSIM against the truth for raw, best Gaussian filter, coarse
   and fine, and the PSNR in the particle band (:func:`nt2c_core.metrics.band_psnr`);
   ``before_after.png``; the noise-patch overlays, GAN samples and loss plots.
Resumable: rerunning continues where it stopped.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from . import __version__
from .data import PROTEASOME
from .denoise import Denoiser, TileSettings
from .io import list_mrcs, read_mrc, write_json
from .layout import WorkLayout, loss_png, samples_png
from .metrics import band_psnr, psnr, ssim
from .noise.extract import ExtractionSettings
from .noise.synthesize import GANConfig
from .pipeline import PipelineConfig, run_pipeline
from .plots import panels
from .settings import FINE, TRAINING_CARBON_FRACTION, replace
from .simulate import Acquisition, SimulationConfig
from .simulate.experimental import ExperimentalNoise, make_experimental_dataset
from .training import TrainConfig

log = logging.getLogger(__name__)

ACQUISITION = Acquisition(voltage_kv=300, cs_mm=2.7, amplitude_contrast=0.07, pixel_size=2.0, dose=40.0, detector="K3")
GAUSS_SIGMAS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def demo_config(out: Path, quick: bool, device: str) -> tuple[SimulationConfig, PipelineConfig]:
    """The experimental data set and the pipeline settings of the demo (``quick``: seconds)."""
    scale = 0.1 if quick else 1.0
    experimental = SimulationConfig(
        ACQUISITION, size=(512, 512), particles=10, defocus_um=(1.2, 2.8), count=2 if quick else 6, seed=99
    )
    simulation = SimulationConfig(
        ACQUISITION,
        size=(256, 256),
        particles=10,
        defocus_um=(1.0, 3.0),
        count=6 if quick else 32,
        library_size=200,
        seed=0,
        carbon_fraction=TRAINING_CARBON_FRACTION,
    )
    steps = max(int(500 * scale), 10)
    pipeline = PipelineConfig(
        raw=[str(out / "experimental" / "raw" / "*.mrc")],
        structures=[str(PROTEASOME)],
        simulation=simulation,
        # from the general model (coarse_init): a quarter of the 2e-3 this budget takes from scratch (COARSE_TRANSFER)
        coarse=TrainConfig(
            steps=steps,
            batch_size=8,
            crop=128,
            width=24,
            lr=5e-4,
            val_every=max(steps // 5, 1),
            checkpoint_every=max(steps // 5, 1),
            val_fraction=0.1,
        ),
        extraction=ExtractionSettings(),  # the default mask rule; the diameter comes from the structure
        gan=GANConfig(
            iterations=max(int(1000 * scale), 4),
            batch_size=16,
            latent=32,
            width=8,
            lr=2e-4,
            log_every=max(int(50 * scale), 1),
            checkpoint_every=100,
        ),
        fine=replace(
            FINE,
            steps=max(int(400 * scale), 10),
            batch_size=8,
            crop=128,
            width=24,
            lr=5e-4,
            val_every=max(int(80 * scale), 1),
            checkpoint_every=max(int(80 * scale), 1),
            val_fraction=0.1,
        ),
        tiles=TileSettings(512, 128, 1),
        min_noise_patches=4 if quick else 16,
        device=device,
    )
    return experimental, pipeline


def run_demo(
    out_dir: str | os.PathLike, quick: bool = False, device: str = "cpu", noise: ExperimentalNoise | None = None
) -> dict:
    """Run the demo into ``out_dir`` and return the report. ``noise``: the extra noise processes of
    the "experimental" micrographs (default :class:`ExperimentalNoise`; e.g. an ice-thickness
    gradient for the uneven-background benchmark); used only when ``out_dir`` has none yet."""
    out = Path(out_dir)
    experimental, pipeline = demo_config(out, quick, device)
    noise = noise or ExperimentalNoise()
    if not (out / "experimental" / "experimental.json").exists():
        log.info("[demo] making the 'experimental' micrographs (ground truth kept aside)")
        make_experimental_dataset([PROTEASOME], experimental, out / "experimental", noise)
    summary = run_pipeline(pipeline, out / "work")
    log.info("[demo] scoring against the ground truth")
    work = out / "work"
    scores = score_against_truth(
        out / "experimental", work, pipeline.tiles, device, out / "report", particle_radius_px(pipeline)
    )
    layout = WorkLayout(work)
    figures = {
        "gan_samples.png": samples_png(layout.model("gan")),
        "coarse_loss.png": loss_png(layout.model("coarse")),
        "fine_loss.png": loss_png(layout.model("fine")),
        "gan_loss.png": loss_png(layout.model("gan")),
    }
    for name, path in figures.items():
        if path.exists():
            shutil.copyfile(path, out / "report" / name)
    overlays = sorted(layout.overlays.glob("*.png"))
    if overlays:
        shutil.copyfile(overlays[0], out / "report" / "noise_patches_overlay.png")
    report = {
        "nt2c_version": __version__,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": quick,
        "acquisition": ACQUISITION.to_dict(),
        "experimental": experimental.to_dict(),
        "experimental_noise": json.loads((out / "experimental" / "experimental.json").read_text())["noise"],
        "noise_patches": summary["stages"]["noise"]["patches"],
        "metrics": scores,
        "chosen_model": summary["stages"]["denoised"].get("chosen"),
        "fine_minus_coarse_psnr_db": (
            scores["fine"]["psnr_db"] - scores["coarse"]["psnr_db"] if "fine" in scores else None
        ),
    }
    write_json(out / "report" / "report.json", report)
    log.info(_table(scores))
    log.info(f"report: {out / 'report'}")
    return report


def particle_radius_px(pipeline: PipelineConfig) -> float:
    """The radius [px] of the largest structure of the run at its pixel size."""
    from .pipeline import extraction_settings

    return extraction_settings(pipeline).particle_diameter / 2 / pipeline.simulation.acquisition.pixel_size


def score_against_truth(
    exp_dir: Path, work: Path, tiles: TileSettings, device: str, report_dir: Path, radius_px: float
) -> dict:
    """PSNR/SSIM against the truth of raw, the best Gaussian, each model (general, coarse, fine)
    and the run's output (the model it chose), and the PSNR in the particle band
    (:func:`nt2c_core.metrics.band_psnr`, ``radius_px``: the particle radius [px])."""
    from .general import general_model_path

    layout = WorkLayout(work)
    models = {
        name: Denoiser.from_file(path, device, tiles)
        for name, path in (
            ("general", general_model_path()),
            ("coarse", layout.model("coarse")),
            ("fine", layout.model("fine")),
        )
        if Path(path).is_file()
    }
    rows: dict[str, list] = {"raw": [], "gaussian": [], **{name: [] for name in models}, "chosen": []}
    per_sigma = {s: [] for s in GAUSS_SIGMAS}
    sample = None
    for path in list_mrcs(exp_dir / "raw"):
        raw, _ = read_mrc(path)
        truth, _ = read_mrc(exp_dir / "truth" / path.name)
        outputs = {name: model.denoise(raw) for name, model in models.items()}
        outputs["chosen"] = read_mrc(layout.denoised / path.name)[0]
        gauss = {s: gaussian_filter(raw.astype(np.float64), s) for s in GAUSS_SIGMAS}
        for s, g in gauss.items():
            per_sigma[s].append((psnr(g, truth), ssim(g, truth), band_psnr(g, truth, radius_px)))
        for name, image in (("raw", raw), *outputs.items()):
            rows[name].append((psnr(image, truth), ssim(image, truth), band_psnr(image, truth, radius_px)))
        if sample is None:
            sample = (path.stem, truth, raw, gauss, outputs["coarse"], outputs.get("fine", outputs["chosen"]))
    best = max(per_sigma, key=lambda s: np.mean([r[0] for r in per_sigma[s]]))
    rows["gaussian"] = per_sigma[best]
    name, truth, raw, gauss, coarse, fine = sample
    panels(
        report_dir / "before_after.png",
        [
            ("ground truth", truth),
            ("raw ('experimental')", raw),
            (f"Gaussian, sigma {best} px", gauss[best]),
            ("NT2C coarse", coarse),
            ("NT2C fine", fine),
        ],
        f"{name}: 20S proteasome, 2 Å/px, 40 e/Å², with stripes and correlated noise{_gradient_note(exp_dir)}",
    )
    return {
        m: {
            "psnr_db": float(np.mean([r[0] for r in v])),
            "ssim": float(np.mean([r[1] for r in v])),
            "band_psnr_db": float(np.mean([r[2] for r in v])),
            **({"sigma_px": best} if m == "gaussian" else {}),
        }
        for m, v in rows.items()
    }


def _gradient_note(exp_dir: Path) -> str:
    """', ice gradient +-N %' when the experimental micrographs have one (their experimental.json)."""
    try:
        gradient = float(json.loads((exp_dir / "experimental.json").read_text())["noise"]["ice_gradient"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f", ice gradient +-{100 * gradient:g} %" if gradient > 0 else ""


def _table(scores: dict) -> str:
    lines = ["method     PSNR (dB)  SSIM   particle-band PSNR (dB)"]
    lines += [f"{m:<10} {v['psnr_db']:9.2f}  {v['ssim']:.3f}  {v['band_psnr_db']:9.2f}" for m, v in scores.items()]
    return "\n".join(lines)
