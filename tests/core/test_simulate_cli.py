"""``nt2c simulate``: files, headers, STAR, params, resume, and bad input."""

import gzip
import json
import os

import numpy as np
import pytest
import starfile

from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN
from nt2c_core.io import read_mrc

SMALL = ["--pixel-size", "2.5", "--size", "160", "128", "--particles", "3", "--defocus", "1.0", "2.0"]


def run_cli(*args):
    return main(["simulate", *map(str, args)])


def test_simulate_writes_pairs_star_and_params(tmp_path):
    out = tmp_path / "sim"
    assert run_cli("-o", out, "--structure", APOFERRITIN, "--count", 2, "--seed", 4, *SMALL) == 0
    for name in ("mic_0000", "mic_0001"):
        clean, px_clean = read_mrc(out / "clean" / f"{name}.mrc")
        noisy, px_noisy = read_mrc(out / "noisy" / f"{name}.mrc")
        assert clean.shape == noisy.shape == (128, 160)
        assert px_clean == px_noisy == pytest.approx(2.5)
        assert noisy.mean() == pytest.approx(40 * 2.5**2, rel=0.02)  # e/px at the dose
        star = starfile.read(out / "coords" / f"{name}.star")
        assert len(star) == 3
        assert {"rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU"} <= set(
            star.columns
        )
        assert star["rlnCoordinateX"].between(0, 160).all() and star["rlnCoordinateY"].between(0, 128).all()
        assert star["rlnDefocusU"].between(1.0e4 - 500, 2.0e4 + 500).all()
    params = json.loads((out / "params.json").read_text())
    assert params["nt2c_version"] and params["config"]["acquisition"]["pixel_size"] == 2.5
    assert params["structures"][0]["atoms"] == 32618
    # carbon films by default at the fraction 'nt2c run' and the Scipion protocols train on (one preset)
    from nt2c_core.settings import TRAINING_SIMULATION, PipelineConfig

    assert params["config"]["carbon_fraction"] == TRAINING_SIMULATION.carbon_fraction > 0
    assert PipelineConfig.example().simulation.carbon_fraction == TRAINING_SIMULATION.carbon_fraction


def test_carbon_fraction_records_which_micrographs_hold_a_film(tmp_path):
    """The pipeline's model choice leaves these out of its held-out PSNR (they have their own check)."""
    from nt2c_core.pairs import film_names, load_pairs

    out = tmp_path / "sim"
    assert run_cli("-o", out, "--structure", APOFERRITIN, "--count", 6, "--carbon-fraction", 0.5, *SMALL) == 0
    films = film_names(out)
    assert 1 <= len(films) <= 5 and films <= {f"mic_{i:04d}" for i in range(6)}
    pairs = load_pairs(out)
    in_ice = pairs.without(films)
    assert len(in_ice) == 6 - len(films) and not set(in_ice.names) & films
    for name in films:  # darker where the record puts the film: the film's step is in the clean image
        edge = json.loads((out / "params.json").read_text())["carbon_edges"][name]
        clean = read_mrc(out / "clean" / f"{name}.mrc")[0]
        yy, xx = np.mgrid[:128, :160]
        on_film = np.hypot(xx - edge["cx"], yy - edge["cy"]) > edge["radius"] + 8
        assert clean[on_film].mean() < 0.9 * clean[~on_film].mean()


def test_rerun_resumes_and_a_different_run_in_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "sim"
    args = ["-o", out, "--structure", APOFERRITIN, "--count", 2, *SMALL]
    assert run_cli(*args) == 0
    target = out / "noisy" / "mic_0001.mrc"
    first = read_mrc(target)[0]
    target.unlink()  # as if the run had stopped before the last micrograph
    stamp = (out / "noisy" / "mic_0000.mrc").stat().st_mtime_ns
    assert run_cli(*args) == 0
    assert (out / "noisy" / "mic_0000.mrc").stat().st_mtime_ns == stamp  # not redone
    assert np.array_equal(read_mrc(target)[0], first)  # redone identically
    assert run_cli(*args[:-3], "--defocus", 3.0, 3.5) == 2
    assert "holds a different simulation" in capsys.readouterr().err


def _no_outputs(folder):
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), (b"", "empty"), (b"this is not a structure\x00\x01", "no atoms"), (b"garbage", "no atoms")],
)
def test_bad_structure_is_named_and_nothing_written(tmp_path, capsys, content, message):
    path = tmp_path / "model.pdb"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "sim"
    assert run_cli("-o", out, "--structure", path, *SMALL) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert _no_outputs(out)


def test_corrupt_gzip_structure(tmp_path, capsys):
    path = tmp_path / "model.cif.gz"
    path.write_bytes(gzip.compress(b"data_x\nloop_\n_atom_site.id\n")[:-6])
    assert run_cli("-o", tmp_path / "sim", "--structure", path, *SMALL) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, name",
    [
        ("--pixel-size", "0.01", "pixel size"),
        ("--voltage", "5000", "voltage"),
        ("--dose", "-3", "dose"),
        ("--amplitude-contrast", "0.9", "amplitude contrast"),
        ("--carbon-fraction", "1.5", "carbon fraction"),
        ("--ice-gradient", "0.95", "ice gradient"),
    ],
)
def test_out_of_range_parameters_are_named(tmp_path, capsys, flag, value, name):
    out = tmp_path / "sim"
    assert run_cli("-o", out, "--structure", APOFERRITIN, *SMALL, flag, value) == 2
    assert name in capsys.readouterr().err
    assert _no_outputs(out)


def test_micrograph_too_small_for_one_particle(tmp_path, capsys):
    out = tmp_path / "sim"
    assert run_cli("-o", out, "--structure", APOFERRITIN, "--pixel-size", "1.0", "--size", "64", "64") == 2
    assert "too small for one particle" in capsys.readouterr().err
    assert _no_outputs(out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_non_writable_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert run_cli("-o", locked / "sim", "--structure", APOFERRITIN, *SMALL) == 2
    assert "not writable" in capsys.readouterr().err or "cannot write" in capsys.readouterr().err


def test_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert run_cli("-o", blocker, "--structure", APOFERRITIN, *SMALL) == 2
    assert str(blocker) in capsys.readouterr().err
    assert blocker.read_text() == "x"
