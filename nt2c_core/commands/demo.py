"""``nt2c demo``: the main job on the embedded default dataset (see ``nt2c_core.demo``)."""

from __future__ import annotations

import argparse

from . import register


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="demo_output", help="output folder (resumable)")
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds) to check the installation")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..device import resolve_device

    run_demo(args.output, quick=args.quick, device=str(resolve_device(args.device)))
    return 0


register("demo", "Run NT2C on the embedded demo dataset and write a report.", add_arguments, run)
