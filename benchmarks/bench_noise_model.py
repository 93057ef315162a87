"""Which noise model should the fine stage use: the paper's WGAN-GP or the real patches themselves?

The demo's data set (``nt2c demo``: 20S proteasome "experimental" micrographs with gain stripes,
correlated detector noise and an ice gradient; ground truth kept aside). One full demo run (noise
model ``gan``, the default); then the same work folder's simulate, coarse and noise stages are
copied and the fine stage is trained again with ``noise_model = "patches"`` (the extracted real
patches tiled directly, ``nt2c_core.noise.real_patches``), same seeds and budgets. Both fine models
and the coarse and general models are scored by PSNR/SSIM against the truth on the experimental
micrographs (``nt2c_core.demo.score_against_truth``). A third fine model is trained the same way
without the data-consistency term (``fine.consistency = 0``, the paper's fine stage) to show what
the term costs or gains against the truth. Prints a table and writes
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

from nt2c_core.demo import demo_config, run_demo, score_against_truth  # noqa: E402
from nt2c_core.layout import WorkLayout  # noqa: E402
from nt2c_core.pipeline import run_pipeline  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's tiny budgets (checks the script)")
    parser.add_argument("--work", default=str(HERE / "work" / "noise_model"), help="work folder (resumable)")
    args = parser.parse_args(argv)
    out = Path(args.work) / ("quick" if args.quick else "full")
    start = time.time()
    run_demo(out, quick=args.quick)
    gan_seconds = time.time() - start
    _, config = demo_config(out, args.quick, "cpu")
    patches_work, plain_work = out / "work_patches", out / "work_no_consistency"
    for work, stages in ((patches_work, ("simulate", "coarse", "noise")),
                         (plain_work, ("simulate", "coarse", "noise", "gan"))):
        for stage in stages:
            if not WorkLayout(work).done(stage).exists():
                shutil.copytree(out / "work" / stage, work / stage, dirs_exist_ok=True)
    start = time.time()
    run_pipeline(dataclasses.replace(config, noise_model="patches"), patches_work)
    patches_seconds = time.time() - start
    run_pipeline(dataclasses.replace(config, fine=dataclasses.replace(config.fine, consistency=0.0)), plain_work)
    gan = score_against_truth(out / "experimental", out / "work", config.tiles, "cpu", out / "report_gan")
    patches = score_against_truth(out / "experimental", patches_work, config.tiles, "cpu", out / "report_patches")
    plain = score_against_truth(out / "experimental", plain_work, config.tiles, "cpu", out / "report_no_consistency")
    rows = {**{k: gan[k] for k in ("raw", "gaussian", "general", "coarse")},
            "fine (GAN noise)": gan["fine"], "fine (real patches)": patches["fine"],
            "fine (GAN noise, no consistency)": plain["fine"]}
    print("\nmethod                            PSNR (dB)  SSIM")
    for name, row in rows.items():
        print(f"{name:<33} {row['psnr_db']:9.2f}  {row['ssim']:.3f}")
    result = {"quick": args.quick, "metrics": rows,
              "fine_gan_minus_coarse_db": gan["fine"]["psnr_db"] - gan["coarse"]["psnr_db"],
              "fine_patches_minus_coarse_db": patches["fine"]["psnr_db"] - gan["coarse"]["psnr_db"],
              "fine_gan_minus_fine_patches_db": gan["fine"]["psnr_db"] - patches["fine"]["psnr_db"],
              "consistency_gain_db": gan["fine"]["psnr_db"] - plain["fine"]["psnr_db"],
              "seconds": {"demo_with_gan": round(gan_seconds, 1), "fine_with_patches": round(patches_seconds, 1)}}
    for key in ("fine_gan_minus_coarse_db", "fine_patches_minus_coarse_db", "fine_gan_minus_fine_patches_db",
                "consistency_gain_db"):
        print(f"{key}: {result[key]:+.2f}")
    save("noise-model" + ("-quick" if args.quick else ""), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
