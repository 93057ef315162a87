"""Calibration (``nt2c calibrate``): known parameters are recovered from simulated "real"
micrographs, calibrated simulation matches their spectra better than the given settings, and
what cannot be estimated (no rings, wrong pixel size, non-counting detector) falls back to the
given values with a note, never to nonsense."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from nt2c_core.calibrate import calibrate, estimate_micrograph
from nt2c_core.cli import main
from nt2c_core.data import PROTEASOME
from nt2c_core.errors import InputError
from nt2c_core.io import read_mrc, write_mrc
from nt2c_core.pipeline import run_pipeline
from nt2c_core.simulate import Acquisition, SimulationConfig
from nt2c_core.simulate.micrograph import MicrographSimulator
from nt2c_core.simulate.structure import load_structure

TRUE = Acquisition(pixel_size=1.5, dose=40.0, detector="K3")
TRUE_SIM = SimulationConfig(
    TRUE,
    defocus_um=(1.5, 2.5),
    astigmatism_um=0.05,
    ice_thickness=300.0,
    size=(768, 768),
    particles=15,
    count=3,
    seed=5,
)
# what a user might have typed: right optics, dose a bit off, defocus and ice unknown
GIVEN = SimulationConfig(
    Acquisition(pixel_size=1.5, dose=28.0, detector="K3"),
    defocus_um=(0.8, 1.2),
    ice_thickness=100.0,
    size=(768, 768),
    particles=15,
)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Three 768^2 "real" micrographs with known defocus, dose and ice: (paths, true defoci [Å])."""
    folder = tmp_path_factory.mktemp("calreal")
    simulator = MicrographSimulator([load_structure(PROTEASOME)], TRUE_SIM)
    paths, defoci = [], []
    for i in range(TRUE_SIM.count):
        mic = simulator.simulate(i)
        paths.append(write_mrc(folder / f"mic{i}.mrc", mic.noisy, TRUE.pixel_size))
        defoci.append((mic.defocus_u, mic.defocus_v))
    return paths, defoci


def test_cli_recovers_defocus_and_dose_and_brings_spectra_closer(tmp_path, real, capsys):
    paths, defoci = real
    out = tmp_path / "cal"
    main(
        [
            "calibrate",
            *map(str, paths),
            "-o",
            str(out),
            "--pixel-size",
            "1.5",
            "--dose",
            "28",
            "--detector",
            "K3",
            "--defocus",
            "0.8",
            "1.2",
            "--ice-thickness",
            "100",
            "--structure",
            str(PROTEASOME),
        ]
    )
    report = json.loads((out / "calibration.json").read_text())
    for estimate, (u, v) in zip(report["micrographs"], defoci):
        assert estimate["defocus_u"] == pytest.approx(u, rel=0.02)
        assert estimate["defocus_v"] == pytest.approx(v, rel=0.02)
        assert estimate["dose"] == pytest.approx(TRUE.dose, rel=0.10)
    sim = report["simulation"]
    assert sim["acquisition"]["dose"] == pytest.approx(40.0, rel=0.10)
    mean_defoci = [0.5 * (u + v) / 1e4 for u, v in defoci]
    assert sim["defocus_um"] == pytest.approx([min(mean_defoci), max(mean_defoci)], rel=0.02)
    assert 200 < sim["ice_thickness"] < 400
    assert report["notes"] == []
    for part in ("whole", "background"):
        distance = report["spectrum_distance"][part]
        assert distance["calibrated"] < 0.6 * distance["given"], part
    assert (out / "calibration.png").stat().st_size > 10_000
    assert f"dose {sim['acquisition']['dose']:.1f} e/Å²" in capsys.readouterr().out
    # nt2c simulate takes the calibrated settings
    main(
        [
            "simulate",
            "--structure",
            str(PROTEASOME),
            "--calibration",
            str(out / "calibration.json"),
            "--size",
            "256",
            "256",
            "--particles",
            "1",
            "--pixel-size",
            "1.5",
            "-o",
            str(tmp_path / "sim"),
        ]
    )
    params = json.loads((tmp_path / "sim" / "params.json").read_text())["config"]
    assert params["acquisition"] == sim["acquisition"]
    assert (params["defocus_um"], params["ice_thickness"]) == (sim["defocus_um"], sim["ice_thickness"])


def test_white_noise_has_no_thon_rings_and_keeps_the_given_defocus():
    noise = np.random.default_rng(3).poisson(40 * 1.5**2, (768, 768)).astype(np.float32)
    result = calibrate([("flat.mrc", noise)], GIVEN)
    assert result.simulation.defocus_um == GIVEN.defocus_um
    assert result.simulation.acquisition.dose == GIVEN.acquisition.dose
    assert any("flat.mrc: defocus: no Thon rings found" in n for n in result.notes)
    assert any("dose: no micrograph gave an estimate" in n for n in result.notes)


def test_wrong_pixel_size_is_reported_not_turned_into_nonsense(real):
    image, _ = read_mrc(real[0][0])
    wrong = SimulationConfig(Acquisition(pixel_size=3.0, dose=40.0, detector="K3"), defocus_um=(1.0, 2.0))
    result = calibrate([("mic0.mrc", image)], wrong)
    assert "pixel size" in " ".join(result.notes)
    # whatever was not trustworthy kept the given value
    assert result.simulation.acquisition.dose == 40.0 or not result.estimates[0].dose
    if result.estimates[0].defocus is None:
        assert result.simulation.defocus_um == (1.0, 2.0)


def test_non_counting_detector_keeps_the_given_dose_but_fits_defocus(real):
    image, _ = read_mrc(real[0][0])
    result = calibrate([("mic0.mrc", image)], GIVEN, counting=False)
    assert result.simulation.acquisition.dose == 28.0
    assert result.estimates[0].defocus == pytest.approx(np.mean(real[1][0]), rel=0.02)
    assert any("does not count electrons" in n for n in result.notes)


def test_known_defocus_is_accepted_and_a_dose_far_off_the_given_one_is_not_trusted(real):
    image, _ = read_mrc(real[0][0])
    given = SimulationConfig(Acquisition(pixel_size=1.5, dose=10.0, detector="K3"))
    result = calibrate([("mic0.mrc", image)], given, known_defocus=(20000.0, 19000.0, math.radians(30)))
    assert result.simulation.defocus_um == (1.95, 1.95)
    assert result.simulation.acquisition.dose == 10.0
    assert any("more than 2x off the given 10.0" in n for n in result.notes)


def test_a_normalized_image_is_refused_with_its_name():
    image = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    with pytest.raises(InputError, match="norm.mrc: mean value .* negative pixels; expected detector counts"):
        estimate_micrograph(image, TRUE, "norm.mrc")


def test_real_micrograph_defocus_dose_and_image_filter(real_micrograph):
    """The EPU Falcon micrograph: its header says about 41 e/Å² (values are EPU-scaled, so only
    the shot-noise level can tell), and its noise falls off steeply (an image low-pass)."""
    image, pixel = read_mrc(real_micrograph)
    acq = Acquisition(pixel_size=pixel, dose=41.0, detector="Falcon4")
    estimate = estimate_micrograph(image, acq, real_micrograph.name)
    assert 1.0e4 < estimate.defocus < 4.0e4
    assert abs(estimate.defocus_u - estimate.defocus_v) < 0.1 * estimate.defocus
    assert estimate.dose == pytest.approx(41.0, rel=0.2)
    assert estimate.gain == pytest.approx(float(image.mean()) / (estimate.dose * pixel**2), rel=1e-6)
    assert estimate.image_filter > 2


def test_image_low_pass_is_recovered_with_the_dose():
    acq = Acquisition(pixel_size=1.5, dose=40.0, detector="K3", image_filter=8.0)
    config = SimulationConfig(acq, defocus_um=(2.0, 2.0), size=(768, 768), particles=10, seed=9)
    mic = MicrographSimulator([load_structure(PROTEASOME)], config).simulate(0)
    estimate = estimate_micrograph(mic.noisy, replace(acq, image_filter=0.0), "filtered")
    assert estimate.image_filter == pytest.approx(8.0, abs=2.0)
    assert estimate.dose == pytest.approx(40.0, rel=0.10)


def test_pipeline_simulates_with_calibrated_settings(tmp_path, real):
    from nt2c_core.pipeline import PipelineConfig

    sim = SimulationConfig(
        GIVEN.acquisition,
        defocus_um=(0.8, 1.2),
        ice_thickness=100.0,
        size=(384, 384),
        particles=3,
        count=2,
        library_size=4,
    )
    config = PipelineConfig(raw=[str(p) for p in real[0]], structures=[str(PROTEASOME)], simulation=sim, calibrate=True)
    summary = run_pipeline(config, tmp_path / "work", progress=False, only=["simulate"])
    calibrated = summary["stages"]["simulate"]["calibrated"]
    assert calibrated["dose"] == pytest.approx(40.0, rel=0.10)
    assert calibrated["defocus_um"][0] > 1.5
    params = json.loads((tmp_path / "work" / "simulate" / "params.json").read_text())
    assert params["config"]["acquisition"]["dose"] == calibrated["dose"]
    assert (tmp_path / "work" / "simulate" / "calibration" / "calibration.json").is_file()


def test_an_8bit_export_keeps_the_given_dose_and_ice_but_fits_defocus(real):
    """An 8-bit export (EMPIAR PNG-like) has Thon rings but no shot-noise level: said so, and the
    given dose and ice are kept (they came out as ice 0 Å and gain ~1000 per electron before)."""
    image, _ = read_mrc(real[0][0])
    lo, hi = np.percentile(image, (0.5, 99.5))
    exported = np.clip(np.round((image - lo) / (hi - lo) * 255), 0, 255).astype(np.float32)
    result = calibrate([("mic0.png", exported)], GIVEN)
    assert any("8-bit export" in n and "not detector counts" in n for n in result.notes)
    assert result.simulation.acquisition.dose == GIVEN.acquisition.dose
    assert result.simulation.ice_thickness == GIVEN.ice_thickness
    assert result.estimates[0].defocus == pytest.approx(np.mean(real[1][0]), rel=0.03)


def test_a_calibration_that_moves_away_from_the_data_is_not_applied(tmp_path, real, monkeypatch):
    import nt2c_core.calibrate as cal
    import nt2c_core.calibrate.files as cal_files

    distances = iter([0.10, 0.30])  # given, then calibrated: worse

    def fake_compare(images, config, structures, size=1024):
        d = next(distances)
        return {part: {"log_distance": d} for part in ("whole", "background")}

    monkeypatch.setattr(cal_files, "compare_to_simulation", fake_compare)
    monkeypatch.setattr(cal_files, "plot_comparison", lambda *a: None)
    result = cal.calibrate_files(real[0][:1], GIVEN, tmp_path / "c", [str(PROTEASOME)])
    assert result.simulation == GIVEN and any("further from" in n for n in result.notes)
    report = json.loads((tmp_path / "c" / "calibration.json").read_text())
    assert report["kept_given"] and report["simulation"]["acquisition"]["dose"] == GIVEN.acquisition.dose
