"""``nt2c evaluate``: PSNR, SSIM, FRC and eq. 5 SNR of denoised micrographs against ground truth."""

from __future__ import annotations

import argparse
import json

from . import register


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--truth", required=True, help="folder of ground-truth (clean) MRCs")
    p.add_argument("--pred", required=True, help="folder of denoised MRCs (matched by file name)")
    p.add_argument("--coords", help="folder of particle STAR files (same names) for eq. 5 SNR regions")
    p.add_argument("--box", type=int, help="eq. 5 region size [px] (default: 1/8 of the micrograph)")
    p.add_argument("-o", "--output", required=True, help="folder for metrics.json and metrics.png")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_folders

    result = evaluate_folders(args.truth, args.pred, args.output, args.coords, args.box)
    print(json.dumps(result["summary"], indent=2))
    return 0


register("evaluate", "Score denoised micrographs against ground truth.", add_arguments, run)
