"""Run a baseline that lives in the benchmark's own virtualenv (Topaz-Denoise, BM3D) on MRC files.

This script imports neither nt2c nor Scipion: ``bench_compare.py`` calls it with the external
virtualenv's Python (``make bench`` creates it: CPU torch, topaz-em without its torchvision
dependency, bm3d). Writes OUT/<name>.mrc for every input and OUT/run.json with per-file seconds
(median of ``--repeats`` after one warm-up on the first file's 512^2 corner), this process's
peak RSS [GB], settings and versions.

  python external_runner.py topaz IN.mrc... -o OUT [--patch-size 1024 --padding 500]
  python external_runner.py bm3d IN.mrc... -o OUT --sigmas SIGMAS.json   (per-file noise std)
  python external_runner.py topaz3d VOL.mrc... -o OUT [--model unet-3d-10a --patch-size 96 --padding 48]
  python external_runner.py bm4d VOL.mrc... -o OUT --sigmas SIGMAS.json   (tomograms)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import mrcfile
import numpy as np


def topaz_method(args):
    import torch
    from topaz.denoise import Denoise, denoise_image

    torch.set_num_threads(args.threads)
    model = Denoise(args.model, use_cuda=False)

    def run(image, name):
        return denoise_image(image, [model], patch_size=args.patch_size, padding=args.padding, use_cuda=False)

    import topaz

    return run, {
        "model": args.model,
        "patch_size": args.patch_size,
        "padding": args.padding,
        "topaz": getattr(topaz, "__version__", "0.3.20"),
        "torch": torch.__version__,
    }


def block_matching(module: str):
    """BM3D (images) or BM4D (volumes) on z-scored data with the caller's per-file noise sigma."""

    def method(args):
        from importlib import import_module
        from importlib.metadata import version

        denoise = getattr(import_module(module), module)
        sigmas = json.loads(Path(args.sigmas).read_text())

        def run(data, name):
            mean, std = float(data.mean()), float(data.std())
            return denoise((data - mean) / std, sigma_psd=sigmas[name] / std) * std + mean

        return run, {"sigma": "per file, from --sigmas (estimated by the caller)", module: version(module)}

    return method


def topaz3d_method(args):
    import torch
    from topaz.denoise import Denoise3D

    torch.set_num_threads(args.threads)
    model = Denoise3D(args.model, use_cuda=False, dims=3)

    def run(volume, name):
        return model.denoise(volume, patch_size=args.patch_size, padding=args.padding, batch_size=1, verbose=False)

    return run, {
        "model": args.model,
        "patch_size": args.patch_size,
        "padding": args.padding,
        "topaz": "0.3.20",
        "torch": torch.__version__,
    }


METHODS = {
    "topaz": topaz_method,
    "bm3d": block_matching("bm3d"),
    "topaz3d": topaz3d_method,
    "bm4d": block_matching("bm4d"),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method", choices=sorted(METHODS))
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--model", default="unet", help="Topaz pretrained denoiser")
    p.add_argument("--patch-size", type=int, default=1024)
    p.add_argument("--padding", type=int, default=500)
    p.add_argument("--sigmas")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    run, settings = METHODS[args.method](args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    first = mrcfile.read(args.inputs[0]).astype(np.float32)
    if first.ndim == 2:
        run(np.ascontiguousarray(first[:512, :512]), Path(args.inputs[0]).name)  # warm-up, not timed
    seconds = {}
    for path in map(Path, args.inputs):
        with mrcfile.open(path, permissive=True) as mrc:
            image, voxel = mrc.data.astype(np.float32), float(mrc.voxel_size.x)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = run(image, path.name)
            times.append(time.perf_counter() - t)
        seconds[path.name] = statistics.median(times)
        with mrcfile.new(out / path.name, overwrite=True) as mrc:
            mrc.set_data(np.asarray(result, np.float32))
            mrc.voxel_size = voxel
    report = {
        "method": args.method,
        "settings": settings,
        "repeats": args.repeats,
        "threads": args.threads,
        "seconds": seconds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    (out / "run.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
