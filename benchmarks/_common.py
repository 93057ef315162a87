"""Helpers shared by the benchmark scripts: machine facts, peak RSS, result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import socket
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def save(name: str, payload: dict) -> Path:
    """Write ``results/<date>-<name>-<host>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = RESULTS / f"{stamp}-{name}-{socket.gethostname()}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
