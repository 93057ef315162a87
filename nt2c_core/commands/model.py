"""``nt2c model-info``: check a model file and print its metadata (kind, architecture, pixel size,
training), for scripts and for the Scipion plugin's isolated route, whose Python has no torch."""

from __future__ import annotations

import argparse
import json

from . import register


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.pt", help="NT2C model file (denoiser, noise GAN, restorer, tomogram)")
    p.add_argument("--json", metavar="FILE", help="also write the metadata to FILE (atomically)")


def run(args: argparse.Namespace) -> int:
    from ..io import write_json
    from ..models.store import load_model

    _, metadata = load_model(args.model)  # the whole check: kind, architecture, weights fit and finite
    text = json.dumps(metadata, indent=2, sort_keys=True)
    print(text)
    if args.json:
        write_json(args.json, metadata)
    return 0


register("model-info", "Check an NT2C model file and print its metadata (JSON).", add_arguments, run)
