"""The paper's uneven-background limit, measured: the demo on micrographs with an ice-thickness gradient.

The NT2C paper names uneven backgrounds as its limit: its SSIM tile rule needs flat background,
and the ice texture of a thickness the simulation does not have looks like structure. Here the
demo's "experimental" micrographs (20S proteasome, 2 Å/px, gain stripes and correlated detector
noise, ground truth kept aside) get an ice-thickness gradient of +-``--gradient`` (default 0.3,
i.e. +-30 %) across each micrograph (``nt2c_core.simulate.experimental``: the ice texture's
variance follows the local thickness, the intensity falls with it as after an energy filter), and
the whole demo pipeline runs with the package's defaults (mask-rule noise patches, noise model
``patches``, data consistency, model choice). Reported: noise patches found and the free-area
fraction per micrograph, PSNR/SSIM against the truth (the noise-free image through the same uneven
ice: darker where the ice is thicker) and the PSNR in the particle band (scales above the particle
radius left out, so the intensity ramp counts for nothing either way) of raw, the best Gaussian,
the general, coarse and fine models and the run's choice, and fine - coarse in both. Writes
``results/<date>-ice-gradient-<host>.json``.

  python bench_ice_gradient.py [--gradient 0.3] [--quick]    (make bench runs it)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import save  # noqa: E402

from nt2c_core.demo import run_demo  # noqa: E402
from nt2c_core.layout import NOISE_SUMMARY, WorkLayout  # noqa: E402
from nt2c_core.pipeline import stage_seconds  # noqa: E402
from nt2c_core.simulate.experimental import ExperimentalNoise  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gradient",
        type=float,
        default=0.3,
        help="relative ice-thickness change from the centre to the edge (0.3 = +-30 %%)",
    )
    parser.add_argument("--quick", action="store_true", help="the demo's tiny budgets (checks the script)")
    parser.add_argument("--work", default=str(HERE / "work" / "ice_gradient"), help="work folder (resumable)")
    args = parser.parse_args(argv)
    out = Path(args.work) / f"{'quick' if args.quick else 'full'}_{args.gradient:g}"
    start = time.time()
    report = run_demo(out, quick=args.quick, noise=ExperimentalNoise(ice_gradient=args.gradient))
    seconds = time.time() - start
    summary = json.loads((WorkLayout(out / "work").noise / NOISE_SUMMARY).read_text())
    metrics = report["metrics"]
    print(f"\nice-thickness gradient +-{100 * args.gradient:g} %: {report['noise_patches']} noise patches")
    print("method     PSNR (dB)  SSIM   particle-band PSNR (dB)")
    for name, row in metrics.items():
        print(f"{name:<10} {row['psnr_db']:9.2f}  {row['ssim']:.3f}  {row['band_psnr_db']:9.2f}")
    result = {
        "quick": args.quick,
        "ice_gradient": args.gradient,
        "noise_patches": report["noise_patches"],
        "per_micrograph": summary.get("per_micrograph"),
        "free_fraction": summary.get("free_fraction"),
        "patch_px": summary.get("patch"),
        "band_power_ratio": summary.get("band_power_ratio"),
        "metrics": metrics,
        "chosen_model": report["chosen_model"],
        "fine_minus_coarse_psnr_db": report["fine_minus_coarse_psnr_db"],
        "fine_minus_coarse_band_psnr_db": (
            metrics["fine"]["band_psnr_db"] - metrics["coarse"]["band_psnr_db"] if "fine" in metrics else None
        ),
        "stage_seconds": stage_seconds(out / "work"),
        "this_call_s": round(seconds, 1),
    }
    if result["fine_minus_coarse_psnr_db"] is not None:
        print(
            f"fine - coarse: {result['fine_minus_coarse_psnr_db']:+.2f} dB (particle band "
            f"{result['fine_minus_coarse_band_psnr_db']:+.2f} dB); chosen: {result['chosen_model']}"
        )
    save("ice-gradient" + ("-quick" if args.quick else ""), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
