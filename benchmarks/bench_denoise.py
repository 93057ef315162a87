"""Denoising speed and peak memory for one 4096^2 micrograph on this machine's CPU (or GPU).

Cases: the paper-size U-Net (width 48, the default) and the fast variant (width 24), default
tiles (1024 px, 128 px margin) and low-memory tiles (512 px); each in its own process so its peak
RSS is its own; median of 3 after a warm-up. The input is the real 4096^2 micrograph from
../shared/data when present, else a simulated one. Target: peak RSS <= 2 GB.

Run: python benchmarks/bench_denoise.py [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_gb, save

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "micrographs" / "epu2.9_example.mrc"
CASES = {"w48_tile1024": (48, 1024, 128), "w48_lowmem512": (48, 512, 128), "w24_tile1024": (24, 1024, 128)}


def _image():
    import numpy as np

    from nt2c_core.io import read_mrc

    if REAL.is_file():
        return read_mrc(REAL)[0], str(REAL)
    rng = np.random.default_rng(0)
    return rng.poisson(18.0, (4096, 4096)).astype(np.float32), "poisson(18) 4096^2"


def run_case(name: str, device: str, repeats: int, precision: str) -> dict:
    import torch

    from nt2c_core.denoise import Denoiser, TileSettings
    from nt2c_core.models import UNet, save_model

    width, tile, margin = CASES[name]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(Path(tmp) / "m.pt", UNet(width), {})
        denoiser = Denoiser.from_file(path, device, TileSettings(tile, margin, 1), precision)
    image, source = _image()
    denoiser.denoise(image[:1024, :1024])  # warm-up, excluded
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        denoiser.denoise(image)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {
        "case": name,
        "width": width,
        "tile": tile,
        "margin": margin,
        "device": device,
        "precision": precision,
        "input": source,
        "shape": list(image.shape),
        "seconds_median": round(statistics.median(times), 2),
        "seconds_all": [round(t, 2) for t in times],
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device, args.repeats, args.precision)))
        return
    results = []
    for name in CASES:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                name,
                "--device",
                args.device,
                "--repeats",
                str(args.repeats),
                "--precision",
                args.precision,
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            results.append({"case": name, "error": out.stderr[-2000:]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    save("denoise", {"results": results, "targets": {"peak_rss_gb": 2.0}})


if __name__ == "__main__":
    main()
