"""Shared fixtures: the shared real data (skipped if absent) and a coarse denoiser trained once per
session on CPU (about 3 minutes): simulated apoferritin, 2 Å/px, 40 e/Å², K3, with held-out
simulated proteasome micrographs (test/ clean, noisy, coords)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def real_micrograph() -> Path:
    path = SHARED_DATA / "micrographs" / "epu2.9_example.mrc"
    if not path.is_file():
        pytest.skip(f"shared real data not found at {path} (CI provides ../shared/data)")
    return path


@pytest.fixture(scope="session")
def shared_structures() -> Path:
    path = SHARED_DATA / "structures"
    if not path.is_dir():
        pytest.skip(f"shared structures not found at {path} (CI provides ../shared/data)")
    return path


@pytest.fixture(scope="session")
def trained():
    """(folder with train/ and test/ simulations, TrainResult of the coarse model): made once per
    process by the plugin tests' helper, so the core and the plugin tests share one training."""
    from nt2c_scipion.tests.helpers import trained_denoiser

    return trained_denoiser()
