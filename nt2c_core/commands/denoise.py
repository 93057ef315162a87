"""``nt2c denoise``: denoise whole micrographs with a trained model."""

from __future__ import annotations

import argparse
import logging

from ..settings import TILES, TileSettings
from . import register

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TILES
    p.add_argument("inputs", nargs="+", metavar="IN.mrc", help="micrographs to denoise")
    p.add_argument(
        "--model",
        default=None,
        help="NT2C model file (default: the general model shipped with nt2c, trained on simulation "
        "across acquisitions; a model trained on your data does better)",
    )
    p.add_argument("-o", "--output", required=True, help="output folder (same file names as the inputs)")
    p.add_argument("--bin", type=int, default=1, choices=(1, 2, 4), help="average-pool the output (for picking)")
    p.add_argument("--tile", type=int, default=d.tile, help="tile size [px], multiple of 32")
    p.add_argument("--margin", type=int, default=d.margin, help="tile overlap context per side [px]")
    p.add_argument("--batch", type=int, default=d.batch, help="tiles per forward pass")
    p.add_argument("--low-memory", action="store_true", help="512-px tiles, one at a time")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="CUDA inference precision")
    p.add_argument("--overwrite", action="store_true", help="redo micrographs whose output exists")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..denoise import Denoiser, denoise_files
    from ..device import resolve_device
    from ..general import general_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    tiles = TileSettings(512, 128, 1) if args.low_memory else TileSettings(args.tile, args.margin, args.batch)
    model = args.model or general_model_path()
    if args.model is None:
        log.info(f"using the shipped general model {model}")
    denoiser = Denoiser.from_file(model, resolve_device(args.device), tiles, args.precision)
    report = denoise_files(denoiser, args.inputs, args.output, args.bin, args.overwrite)
    log.info(report.summary())
    return 1 if report.failed else 0


register("denoise", "Denoise micrographs with a trained NT2C model.", add_arguments, run)
