"""STAR files through ``starfile``: our own files round-trip (quoted names too), and RELION 3.0
(one block) and 3.1+ (optics block first) particle files give the particles."""

import numpy as np
import pytest

from nt2c_core.errors import InputError
from nt2c_core.io import read_star, write_star

RELION_30 = """
data_

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnMicrographName #3
 1024.000000   512.000000 MotionCorr/job002/mic_001.mrc
  100.500000   200.250000 MotionCorr/job002/mic_002.mrc
"""

RELION_31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnImagePixelSize #3
opticsGroup1 1 1.340000

# version 30001

data_particles

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnMicrographName #3
_rlnOpticsGroup #4
10.000000 20.000000 mic1.mrc 1
30.000000 40.000000 "my mic.mrc" 1
50.000000 60.000000 mic3.mrc 1
"""


def test_our_star_files_round_trip_names_with_spaces(tmp_path):
    path = write_star(
        tmp_path / "coords.star",
        "particles",
        ["rlnCoordinateX", "rlnCoordinateY", "rlnMicrographName"],
        [(1.5, 2.25, "my mic.mrc"), (3.0, 4.0, "b.mrc")],
    )
    star = read_star(path)
    assert list(star["rlnMicrographName"]) == ["my mic.mrc", "b.mrc"]  # was '"my' with the old reader
    assert np.allclose(star["rlnCoordinateX"], [1.5, 3.0]) and star["rlnCoordinateY"].dtype == np.float64


def test_relion_30_and_31_particle_files(tmp_path):
    (tmp_path / "r30.star").write_text(RELION_30)
    (tmp_path / "r31.star").write_text(RELION_31)
    r30 = read_star(tmp_path / "r30.star")
    assert np.allclose(r30["rlnCoordinateX"], [1024.0, 100.5])
    assert r30["rlnMicrographName"][1] == "MotionCorr/job002/mic_002.mrc"
    r31 = read_star(tmp_path / "r31.star")  # the particles, not the optics block that comes first
    assert list(r31["rlnMicrographName"]) == ["mic1.mrc", "my mic.mrc", "mic3.mrc"]
    assert read_star(tmp_path / "r31.star", block="optics")["rlnImagePixelSize"][0] == pytest.approx(1.34)
    with pytest.raises(InputError, match="no loop in data block 'coords'"):
        read_star(tmp_path / "r31.star", block="coords")


def test_missing_and_empty_star_files_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_star(tmp_path / "none.star")
    (tmp_path / "empty.star").write_text("data_nothing\n\n")
    with pytest.raises(InputError, match=r"empty.star: (no STAR loop|not a readable STAR file)"):
        read_star(tmp_path / "empty.star")
