"""Which noise model should the fine stage use: the real patches themselves or the paper's WGAN-GP?

The demo's data set (``nt2c demo``: 20S proteasome "experimental" micrographs with gain stripes and
correlated detector noise; ground truth kept aside). One full demo run (the
package's defaults: noise model ``patches``, the data-consistency term on); then the same work
folder's simulate, coarse and noise stages are copied and the fine stage is trained again with
``noise_model = "gan"`` (the paper's WGAN-GP, which adds the gan stage), and once more with the
patches but without the data-consistency term (``fine.consistency = 0``), same seeds and budgets.
The fine models and the coarse and general models are scored by PSNR/SSIM against the truth on
the experimental micrographs (``nt2c_core.demo.score_against_truth``).

The ceiling: the fine stage trained once more with the *exact* experimental noise process (12
noise-only "experimental" micrographs, same gain reference, cut into 128-px and 32-px patches,
z-scored like extracted patches), with and without the data-consistency term: what a perfect
noise model could gain on this data set. Prints a table and writes
``results/<date>-noise-model-<host>.json``.

  python bench_noise_model.py [--quick]    (make bench runs it)
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import save  # noqa: E402

from nt2c_core.demo import demo_config, particle_radius_px, run_demo, score_against_truth  # noqa: E402
from nt2c_core.layout import WorkLayout  # noqa: E402
from nt2c_core.pipeline import run_pipeline  # noqa: E402

ORACLE_MICROGRAPHS = 12


def oracle_patches(out: Path, quick: bool) -> dict[int, Path]:
    """Noise-only "experimental" micrographs (the demo's noise processes and gain reference, no
    particles) cut into 128- and 32-px patches, z-scored with the demo micrographs' mean std as
    extraction z-scores real patches; {patch size: stack}."""
    import numpy as np

    from nt2c_core.data import PROTEASOME
    from nt2c_core.io import list_mrcs, read_mrc, write_mrc
    from nt2c_core.noise.background import grid_tiles
    from nt2c_core.normalization import standardize
    from nt2c_core.simulate.experimental import ExperimentalNoise, make_experimental_dataset

    experimental, _ = demo_config(out, quick, "cpu")
    folder = out / "oracle"
    if not (folder / "noise" / "experimental.json").exists():
        make_experimental_dataset(
            [PROTEASOME],
            dataclasses.replace(experimental, particles=0, count=2 if quick else ORACLE_MICROGRAPHS, seed=555),
            folder / "noise",
            ExperimentalNoise(),
            progress=False,
        )
    std = float(np.mean([read_mrc(p)[0].std() for p in list_mrcs(out / "experimental" / "raw")]))
    images = [read_mrc(path)[0].astype(np.float64) for path in list_mrcs(folder / "noise" / "raw")]
    images = [standardize(image, float(image.mean()), std) for image in images]
    return {
        size: write_mrc(
            folder / f"exact_noise_{size}.mrcs",
            np.concatenate([grid_tiles(image, size, limit=image.size) for image in images]),
            experimental.acquisition.pixel_size,
        )
        for size in (128, 32)
    }


def oracle_rows(out: Path, quick: bool) -> dict[str, dict]:
    """PSNR/SSIM against the truth of fine models trained with the exact noise (see the doc)."""
    import numpy as np

    from nt2c_core.denoise import Denoiser
    from nt2c_core.io import list_mrcs, read_mrc
    from nt2c_core.metrics import psnr, ssim
    from nt2c_core.stages import train_fine

    _, config = demo_config(out, quick, "cpu")
    layout = WorkLayout(out / "work")
    raws = list_mrcs(out / "experimental" / "raw")
    rows = {}
    for size, stack in oracle_patches(out, quick).items():
        for weight in (0.0, config.fine.consistency) if size == 128 else (0.0,):
            model = out / "oracle" / f"fine_exact{size}_consistency{weight:g}.pt"
            if not model.is_file():
                train_fine(
                    layout.pairs,
                    layout.model("coarse"),
                    stack,
                    model,
                    dataclasses.replace(config.fine, consistency=weight),
                    "cpu",
                    config.noise_level,
                    progress=False,
                    micrographs=raws,
                )
            denoiser = Denoiser.from_file(model, "cpu", config.tiles)
            scores = [
                (psnr(d, t), ssim(d, t))
                for d, t in (
                    (denoiser.denoise(read_mrc(p)[0]), read_mrc(out / "experimental" / "truth" / p.name)[0])
                    for p in raws
                )
            ]
            rows[f"fine (exact noise, {size} px, consistency {weight:g})"] = {
                "psnr_db": float(np.mean([a for a, _ in scores])),
                "ssim": float(np.mean([b for _, b in scores])),
            }
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's tiny budgets (checks the script)")
    parser.add_argument("--work", default=str(HERE / "work" / "noise_model"), help="work folder (resumable)")
    args = parser.parse_args(argv)
    out = Path(args.work) / ("quick" if args.quick else "full")
    start = time.time()
    run_demo(out, quick=args.quick)
    demo_seconds = time.time() - start
    _, config = demo_config(out, args.quick, "cpu")
    gan_work, plain_work = out / "work_gan", out / "work_no_consistency"
    for work in (gan_work, plain_work):
        for stage in ("simulate", "coarse", "noise"):
            if not WorkLayout(work).done(stage).exists():
                shutil.copytree(out / "work" / stage, work / stage, dirs_exist_ok=True)
    start = time.time()
    run_pipeline(dataclasses.replace(config, noise_model="gan"), gan_work)
    gan_seconds = time.time() - start
    run_pipeline(dataclasses.replace(config, fine=dataclasses.replace(config.fine, consistency=0.0)), plain_work)
    radius = particle_radius_px(config)
    patches = score_against_truth(
        out / "experimental", out / "work", config.tiles, "cpu", out / "report_patches", radius
    )
    gan = score_against_truth(out / "experimental", gan_work, config.tiles, "cpu", out / "report_gan", radius)
    plain = score_against_truth(
        out / "experimental", plain_work, config.tiles, "cpu", out / "report_no_consistency", radius
    )
    rows = {
        **{k: patches[k] for k in ("raw", "gaussian", "general", "coarse")},
        "fine (real patches)": patches["fine"],
        "fine (GAN noise)": gan["fine"],
        "fine (real patches, no consistency)": plain["fine"],
        **oracle_rows(out, args.quick),
    }
    print("\nmethod                                        PSNR (dB)  SSIM")
    for name, row in rows.items():
        print(f"{name:<45} {row['psnr_db']:9.2f}  {row['ssim']:.3f}")
    result = {
        "quick": args.quick,
        "metrics": rows,
        "fine_gan_minus_coarse_db": gan["fine"]["psnr_db"] - patches["coarse"]["psnr_db"],
        "fine_patches_minus_coarse_db": patches["fine"]["psnr_db"] - patches["coarse"]["psnr_db"],
        "fine_gan_minus_fine_patches_db": gan["fine"]["psnr_db"] - patches["fine"]["psnr_db"],
        "consistency_gain_db": patches["fine"]["psnr_db"] - plain["fine"]["psnr_db"],
        "exact_noise_minus_coarse_db": max(row["psnr_db"] for name, row in rows.items() if "exact" in name)
        - patches["coarse"]["psnr_db"],
        "seconds": {"demo_with_patches": round(demo_seconds, 1), "gan_and_fine": round(gan_seconds, 1)},
    }
    for key in (
        "fine_gan_minus_coarse_db",
        "fine_patches_minus_coarse_db",
        "fine_gan_minus_fine_patches_db",
        "consistency_gain_db",
        "exact_noise_minus_coarse_db",
    ):
        print(f"{key}: {result[key]:+.2f}")
    save("noise-model" + ("-quick" if args.quick else ""), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
