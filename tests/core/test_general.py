"""The shipped general model: a small file with its recipe in the metadata, used by ``nt2c denoise``
when no model is given, denoising a structure and an acquisition it never saw; the recipe reruns."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN
from nt2c_core.denoise import Denoiser
from nt2c_core.general import (
    GENERAL_MODEL,
    GeneralRecipe,
    draw_config,
    export_half,
    general_model_path,
    train_general_model,
)
from nt2c_core.io import read_mrc, write_mrc
from nt2c_core.metrics import psnr
from nt2c_core.models.store import read_model_file
from nt2c_core.simulate import Acquisition, SimulationConfig
from nt2c_core.simulate.micrograph import MicrographSimulator
from nt2c_core.simulate.structure import load_structure

shipped = pytest.mark.skipif(not GENERAL_MODEL.is_file(), reason=f"{GENERAL_MODEL} not installed")


@shipped
def test_shipped_model_is_small_half_precision_and_records_its_recipe():
    assert GENERAL_MODEL.stat().st_size < 5e6
    payload = read_model_file(GENERAL_MODEL)
    assert {v.dtype for v in payload["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    meta = json.loads(payload["metadata"])
    assert meta["general"] is True and meta["kind"] == "denoiser"
    assert meta["recipe"]["pixel_size_A"] == [0.6, 2.0] and meta["recipe"]["dose_e_per_A2"] == [20.0, 60.0]
    assert "nt2c train-general" in meta["recipe_command"]


@shipped
def test_general_model_denoises_an_unseen_structure_and_acquisition(tmp_path, shared_structures):
    spliceosome = shared_structures / "3jb9_Spombe_spliceosome.cif.gz"
    acq = Acquisition(pixel_size=1.7, dose=30.0, detector="K2")
    config = SimulationConfig(acq, size=(512, 512), particles=3, defocus_um=(2.0, 2.0), seed=77)
    mic = MicrographSimulator([load_structure(spliceosome)], config).simulate(0)
    raw_path = write_mrc(tmp_path / "raw" / "mic.mrc", mic.noisy, acq.pixel_size)
    main(["denoise", str(raw_path), "-o", str(tmp_path / "out")])
    denoised, _ = read_mrc(tmp_path / "out" / "mic.mrc")
    raw_db = psnr(mic.noisy, mic.clean)
    gauss_db = max(psnr(gaussian_filter(mic.noisy.astype(np.float64), s), mic.clean) for s in (1, 2, 3, 4))
    general_db = psnr(denoised, mic.clean)
    assert general_db > raw_db + 3.0
    assert general_db > gauss_db


def test_missing_general_model_is_a_clear_error(monkeypatch, tmp_path):
    import nt2c_core.general as general

    monkeypatch.setattr(general, "GENERAL_MODEL", tmp_path / "none.pt")
    with pytest.raises(general.InputError, match="general model is not installed"):
        general.general_model_path()


def test_recipe_draws_are_deterministic_and_in_range():
    recipe = GeneralRecipe()
    draws = [draw_config(recipe, i) for i in range(50)]
    assert [d[1].acquisition.to_dict() for d in draws[:5]] == [
        draw_config(recipe, i)[1].acquisition.to_dict() for i in range(5)
    ]
    acqs = [d[1].acquisition for d in draws]
    assert all(0.6 <= a.pixel_size <= 2.0 and 20 <= a.dose <= 60 for a in acqs)
    assert {a.detector for a in acqs} == {"K2", "K3", "Falcon4"}
    assert {a.voltage_kv for a in acqs} == {200.0, 300.0}
    assert {d[0] for d in draws} == {0, 1}


def test_tiny_recipe_trains_resumes_and_exports_half(tmp_path):
    recipe = GeneralRecipe(structures=[str(APOFERRITIN)], configs=2, per_config=2, size=192, pixel_size_A=(1.5, 2.0))
    recipe = replace(
        recipe,
        train=replace(
            recipe.train, steps=4, batch_size=2, crop=64, width=8, val_every=2, checkpoint_every=2, val_fraction=0.25
        ),
    )
    stopped = train_general_model(recipe, tmp_path, progress=False, stop_after=2)
    assert stopped.model_path is None and (tmp_path / "pairs.npz").is_file()
    result = train_general_model(recipe, tmp_path, progress=False)
    assert result.model_path == tmp_path / "general.pt"
    half = export_half(result.model_path, tmp_path / "half.pt")
    assert half.stat().st_size < result.model_path.stat().st_size
    image = np.random.default_rng(0).poisson(100.0, (128, 128)).astype(np.float32)
    full_out = Denoiser.from_file(result.model_path).denoise(image)
    half_out = Denoiser.from_file(half).denoise(image)
    assert np.abs(full_out - half_out).max() < 1e-2 * full_out.std()
    meta = json.loads(read_model_file(half)["metadata"])
    assert meta["recipe"]["configs"] == 2 and meta["recipe"]["structures"] == [APOFERRITIN.name]


@shipped
def test_general_model_path_is_the_shipped_file():
    assert general_model_path() == GENERAL_MODEL
