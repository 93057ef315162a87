"""Simulator speed and memory: one 4096^2 micrograph with 400 particles of the 46k-atom 20S
proteasome at 1.34 Å/px (target <= 10 s, <= 4 GB peak RSS on 2 CPU cores; median of 3 after a
warm-up), and the batch mode making 512^2
training micrographs (projection library) against the per-particle mode in the same run.

Run: python benchmarks/bench_simulate.py [--device cpu|cuda]. Each case runs in its own process so
the peak RSS is its own."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _common import peak_rss_gb, save

CASES = {
    "field_4096_400": dict(size=(4096, 4096), particles=400, pixel_size=1.34, library=0, count=3),
    "train512_direct": dict(size=(512, 512), particles=8, pixel_size=1.34, library=0, count=10),
    "train512_library": dict(size=(512, 512), particles=8, pixel_size=1.34, library=200, count=10),
}


def run_case(name: str, device: str) -> dict:
    import torch

    from nt2c_core.data import PROTEASOME
    from nt2c_core.simulate import Acquisition, MicrographSimulator, SimulationConfig, load_structure

    case = CASES[name]
    structure = load_structure(PROTEASOME)
    cfg = SimulationConfig(
        Acquisition(pixel_size=case["pixel_size"]),
        size=case["size"],
        particles=case["particles"],
        library_size=case["library"],
        seed=1,
    )
    t0 = time.perf_counter()
    sim = MicrographSimulator([structure], cfg, device)
    setup = time.perf_counter() - t0
    warm = SimulationConfig(Acquisition(pixel_size=case["pixel_size"]), size=(512, 512), particles=2)
    MicrographSimulator([structure], warm, device).simulate(0)  # one-time costs, excluded
    times, placed = [], 0
    for i in range(case["count"]):
        t = time.perf_counter()
        mic = sim.simulate(i)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        placed += len(mic.particles)
    return {
        "case": name,
        **case,
        "device": device,
        "atoms": structure.n_atoms,
        "setup_s": round(setup, 3),
        "per_micrograph_s": round(statistics.median(times), 3),
        "all_s": [round(t, 3) for t in times],
        "particles_placed": placed,
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device)))
        return
    results = []
    for name in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--case", name, "--device", args.device],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    direct, library = results[1]["per_micrograph_s"], results[2]["per_micrograph_s"]
    save(
        "simulate",
        {
            "results": results,
            "library_speedup_vs_direct_512": round(direct / library, 2),
            "targets": {"field_4096_400_s": 10.0, "field_4096_400_rss_gb": 4.0},
        },
    )


if __name__ == "__main__":
    main()
