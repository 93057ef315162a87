"""The invention check (nt2c_core.particles.invention): restored pure noise matched to the data is
scored against the restorer's training structure and a blurred-noise control. Restorers that
invent nothing (identity, a blur) pass; one that paints its mean particle, and an SR3 restorer
over-fitted to its prior at very low dose, are flagged by ``nt2c restore-particles`` itself (log,
invention.json, MRC labels). Empty training boxes reduce the invention; draws give a variance."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_particles import ACQ, TINY
from test_reliability import cli

from nt2c_core.data import APOFERRITIN
from nt2c_core.io import read_json, read_mrc, read_mrc_labels, write_mrc
from nt2c_core.particles.invention import invention_check, matched_noise, training_references
from nt2c_core.particles.simulate import simulate_particles
from nt2c_core.particles.sr3 import restore_images, save_restorer, train_restorer
from nt2c_core.settings import ParticleSimulationConfig
from nt2c_core.simulate.structure import load_structure

LOW_DOSE = replace(ACQ, dose=2.0)  # particle SNR ~0.02: a restorer leans on its prior


@pytest.fixture(scope="module")
def low_dose():
    s = load_structure(APOFERRITIN)
    train = simulate_particles(
        [s], ParticleSimulationConfig(LOW_DOSE, box=32, count=400, max_shift=2.0, seed=1), progress=False
    )
    test = simulate_particles(
        [s], ParticleSimulationConfig(LOW_DOSE, box=32, count=64, max_shift=2.0, seed=2), progress=False
    )
    return train, test


@pytest.fixture(scope="module")
def overfitted(low_dose):
    """SR3 trained without empty boxes at very low dose: restored noise becomes apoferritin."""
    train, _ = low_dose
    return train_restorer(train.noisy, train.clean, replace(TINY, empty_fraction=0.0), progress=False)


def test_matched_noise_has_the_data_spectrum_and_no_particle(low_dose):
    _, test = low_dose
    noise = matched_noise(test.noisy, 128, seed=3)
    data = (test.noisy - test.noisy.mean((1, 2), keepdims=True)) / test.noisy.std((1, 2), keepdims=True)
    p_data = np.mean(np.abs(np.fft.fft2(data)) ** 2, 0)[1:8, 1:8]
    p_noise = np.mean(np.abs(np.fft.fft2(noise)) ** 2, 0)[1:8, 1:8]
    np.testing.assert_allclose(p_noise, p_data, rtol=0.35)  # 128 draws: ~9 % per bin
    mean_particle = training_references(test.clean)["invention_mean"]
    assert abs(np.mean([np.sum((n - n.mean()) * mean_particle) / np.linalg.norm(n - n.mean()) for n in noise])) < 0.03


def test_restorers_that_invent_nothing_pass_and_a_painter_is_flagged(low_dose):
    from scipy.ndimage import gaussian_filter

    train, test = low_dose
    refs = training_references(train.clean)
    args = (test.noisy, refs["invention_references"], refs["invention_mean"])
    identity = invention_check(lambda x: x, *args)
    blur = invention_check(lambda x: np.stack([gaussian_filter(a, 1.5, mode="wrap") for a in x]), *args)
    paint = invention_check(lambda x: x + 0.5 * x.std() * 32 * refs["invention_mean"][None], *args)
    assert not identity.flagged and abs(identity.excess) < 0.01
    assert not blur.flagged and blur.gaussian_sigma_px == pytest.approx(1.5, abs=0.2)
    assert paint.flagged and paint.excess > 0.3 and "INVENTION" in paint.message()


def test_restore_particles_flags_an_overfitted_restorer(tmp_path, capsys, low_dose, overfitted):
    """The deliberately over-fitted SR3 restorer fails the check run by restore-particles: the
    warning in the log, invention.json and the output's labels say so."""
    _, test = low_dose
    write_mrc(tmp_path / "particles.mrcs", test.noisy, 6.0)
    save_restorer(tmp_path / "r.pt", overfitted, TINY, 6.0, 32, {})
    rc, out, err = cli(
        capsys, "restore-particles", tmp_path / "particles.mrcs", "-o", tmp_path / "out", "--model", tmp_path / "r.pt"
    )
    assert rc == 0
    report = read_json(tmp_path / "out" / "invention.json")
    assert report["flagged"] is True and report["excess"] > 0.15, report
    assert report["restored"]["templates"] > report["gaussian"]["templates"] + 0.1
    assert "INVENTION" in out + err and "FAILED the invention check" in out + err
    assert any("FLAGGED" in label for label in read_mrc_labels(tmp_path / "out" / "particles_restored.mrcs"))
    rc, out, err = cli(
        capsys, "restore-particles", tmp_path / "particles.mrcs", "-o", tmp_path / "off", "--model", tmp_path / "r.pt",
        "--invention-images", 0,
    )  # fmt: skip
    assert rc == 0 and not (tmp_path / "off" / "invention.json").exists() and "invention check off" in out + err


def test_empty_training_boxes_reduce_invention(low_dose, overfitted):
    """The default (a quarter of the training boxes empty) invents clearly less than no empty
    boxes on the same data (measured: excess 0.25 against 0.45) and still restores."""
    from nt2c_core.metrics import psnr

    train, test = low_dose
    refs = training_references(train.clean)
    config = replace(TINY, empty_fraction=0.25)
    default = train_restorer(train.noisy, train.clean, config, progress=False)
    scores = {}
    for name, model in (("empty", default), ("none", overfitted)):
        scores[name] = invention_check(
            lambda x: restore_images(model.network, x, model.signal_scale, config, progress=False),
            test.noisy,
            refs["invention_references"],
            refs["invention_mean"],
        ).excess
    assert scores["empty"] < 0.75 * scores["none"], scores
    restored = restore_images(default.network, test.noisy, default.signal_scale, config, progress=False)
    raw = np.mean([psnr(a, b) for a, b in zip(test.noisy, test.clean)])
    assert np.mean([psnr(a, b) for a, b in zip(restored, test.clean)]) > raw + 2.0


def test_uncertainty_stack_and_old_models(tmp_path, capsys, low_dose, overfitted):
    """--uncertainty writes the variance over draws (finite, >= 0, larger where the draws differ);
    it needs --samples >= 2; a model file without training references is restored with a
    warning that the check could not run."""
    _, test = low_dose
    write_mrc(tmp_path / "p.mrcs", test.noisy[:8], 6.0)
    save_restorer(tmp_path / "r.pt", overfitted, TINY, 6.0, 32, {})
    base = ("restore-particles", tmp_path / "p.mrcs", "--model", tmp_path / "r.pt", "--invention-images", 16)
    rc, _, err = cli(capsys, *base, "-o", tmp_path / "u1", "--uncertainty")
    assert rc == 2 and "--uncertainty needs at least 2 draws" in err and "Traceback" not in err
    rc, _, err = cli(capsys, *base, "-o", tmp_path / "u3", "--uncertainty", "--samples", 3)
    assert rc == 0, err
    variance, px = read_mrc(tmp_path / "u3" / "p_variance.mrcs", allow_stack=True)
    restored, _ = read_mrc(tmp_path / "u3" / "p_restored.mrcs", allow_stack=True)
    assert variance.shape == restored.shape == (8, 32, 32) and px == pytest.approx(6.0)
    assert np.all(np.isfinite(variance)) and variance.min() >= 0 and variance.mean() > 0
    # an older file: the same weights, no extras
    payload = torch.load(tmp_path / "r.pt", weights_only=True)
    del payload["extras"]
    torch.save(payload, tmp_path / "old.pt")
    rc, out, err = cli(
        capsys, "restore-particles", tmp_path / "p.mrcs", "--model", tmp_path / "old.pt", "-o", tmp_path / "o"
    )
    assert rc == 0 and "holds no training references" in out + err
    assert not (tmp_path / "o" / "invention.json").exists()
