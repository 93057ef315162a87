"""``nt2c run CONFIG.json``: every NT2C stage in order, resumable (see ``nt2c_core.pipeline``)."""

from __future__ import annotations

import argparse
import json
import logging

from ..settings import STAGES
from . import register

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="pipeline config JSON (see --example)")
    p.add_argument("-o", "--work", "-w", dest="work", help="work folder (one subfolder per stage)")
    p.add_argument("--example", action="store_true", help="print an example config and exit")
    p.add_argument(
        "--preset",
        choices=("cpu", "gpu"),
        default="cpu",
        help="with --example: budgets for a CPU (U-Net width 24, about an hour on 2 cores for a few "
        "micrographs) or a GPU (width 48 as the paper, longer training)",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help='calibrate the simulation to the raw micrographs first (same as "calibrate": true)',
    )
    p.add_argument(
        "--calibration",
        metavar="JSON",
        help="reuse the calibration.json of an earlier 'nt2c calibrate' (same as \"calibration\": path)",
    )
    p.add_argument(
        "--stage",
        action="append",
        choices=STAGES,
        metavar="STAGE",
        help=f"run only this stage (repeat for several; the earlier ones must be complete): "
        f"{', '.join(STAGES)}. One Scipion step per stage runs it so",
    )
    p.add_argument("--device", help="replace the config's device (cpu, cuda, cuda:N, auto or auto:N)")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import PipelineConfig, run_pipeline

    if args.example or not args.config:
        print(json.dumps(PipelineConfig.example(args.preset).to_dict(), indent=2))
        return 0
    if not args.work:
        raise SystemExit("nt2c run: error: --work is required")
    config = PipelineConfig.from_file(args.config)
    config.calibrate = config.calibrate or args.calibrate
    config.calibration = args.calibration or config.calibration
    config.device = args.device or config.device
    summary = run_pipeline(config, args.work, only=args.stage)
    log.info(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "per_micrograph"} for k, v in summary["stages"].items()},
            indent=2,
        )
    )
    return 0


register("run", "Run every NT2C stage on raw micrographs (resumable).", add_arguments, run)
