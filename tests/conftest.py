"""Shared fixtures: the shared real data (skipped if absent) and a coarse denoiser trained once per
session on CPU (about 3 minutes): simulated apoferritin, 2 Å/px, 40 e/Å², K3, with held-out
simulated proteasome micrographs (test/ clean, noisy, coords)."""

from pathlib import Path

import pytest

from nt2c_core.data import APOFERRITIN, PROTEASOME
from nt2c_core.pairs import load_pairs
from nt2c_core.simulate import Acquisition, SimulationConfig, simulate_dataset
from nt2c_core.training import TrainConfig, train_denoiser

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
def trained(tmp_path_factory):
    """(folder with train/ and test/ simulations, TrainResult of the coarse model)."""
    acq, size = Acquisition(pixel_size=2.0, dose=40.0), (256, 256)
    root = tmp_path_factory.mktemp("quality")
    train_cfg = SimulationConfig(acq, size=size, particles=10, defocus_um=(1.0, 3.0), count=24,
                                 library_size=100, seed=0)
    simulate_dataset([APOFERRITIN], train_cfg, root / "train", progress=False)
    test_cfg = SimulationConfig(acq, size=size, particles=10, defocus_um=(1.0, 3.0), count=4, seed=99)
    simulate_dataset([PROTEASOME], test_cfg, root / "test", progress=False)
    config = TrainConfig(steps=400, batch_size=8, crop=128, width=24, lr=2e-3, val_every=100,
                         checkpoint_every=200, val_fraction=0.15, seed=0)
    result = train_denoiser(load_pairs(root / "train"), root / "coarse.pt", config, progress=False)
    return root, result
