"""Shared fixtures: structures shipped in the package and the shared real data (skipped if absent)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def real_micrograph() -> Path:
    path = SHARED_DATA / "micrographs" / "epu2.9_example.mrc"
    if not path.is_file():
        pytest.skip(f"shared real data not found at {path} (CI provides ../shared/data)")
    return path
