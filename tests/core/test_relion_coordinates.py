"""Coordinate files judged by RELION (Debian's CPU build, installed by ``.ci/run``): a coordinate
STAR written by nt2c is extracted by ``relion_preprocess --extract`` with every particle at the
box centre (so x is the column, y the row, 0-based, as inside nt2c), and ``relion_autopick
--LoG``'s ``*_autopick.star`` is read back onto the particles. ``.box`` files as EMAN/crYOLO
write them (lower-left corner) read to the same centres."""

import shutil
import subprocess

import mrcfile
import numpy as np
import pytest

from nt2c_core.errors import InputError
from nt2c_core.evaluation.coordinates import Picks, read_coordinates, write_box, write_relion_coordinates

relion_missing = pytest.mark.skipif(
    shutil.which("relion_preprocess") is None or shutil.which("relion_autopick") is None,
    reason="RELION is not installed (apt-get install relion; .ci/run installs it)",
)
PIXEL = 5.0  # Å/px
# deliberately unequal x and y, so a swapped or flipped axis cannot pass
CENTRES = np.array([(60.0, 80.0), (180.0, 50.0), (120.0, 190.0), (200.0, 140.0), (45.0, 215.0)])

MICROGRAPHS_STAR = """
data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
opticsGroup1 1 {pixel} 300 2.7 0.1

data_micrographs

loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
mic1.mrc 1
"""


def micrograph(folder, sigma_px: float):
    """A 256² micrograph of dark Gaussian blobs (the particles, RELION's default contrast for
    picking) at CENTRES (x = column, y = row), weak noise; its micrographs.star beside it."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    image = rng.normal(0, 0.05, (256, 256))
    for x, y in CENTRES:
        image -= np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_px**2))
    with mrcfile.new(folder / "mic1.mrc", overwrite=True) as mrc:
        mrc.set_data(image.astype(np.float32))
        mrc.voxel_size = PIXEL
    (folder / "micrographs.star").write_text(MICROGRAPHS_STAR.format(pixel=PIXEL))


def relion(*args, cwd):
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@relion_missing
def test_relion_extracts_nt2c_coordinates_at_the_box_centre(tmp_path):
    micrograph(tmp_path, sigma_px=3.0)
    write_relion_coordinates(tmp_path / "coords" / "mic1_pick.star", Picks(CENTRES))
    relion(
        "relion_preprocess", "--i", "micrographs.star", "--coord_dir", "coords/", "--coord_suffix", "_pick.star",
        "--part_star", "particles.star", "--part_dir", "Extract/", "--extract", "--extract_size", "32", cwd=tmp_path,
    )  # fmt: skip
    stack = mrcfile.read(tmp_path / "Extract" / "mic1.mrcs")
    assert stack.shape == (len(CENTRES), 32, 32)
    yy, xx = np.mgrid[0:32, 0:32]
    for box in stack:
        weight = np.clip(np.median(box) - box, 0, None) ** 2  # the dark blob
        centroid = ((weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum())
        # RELION's box centre is size / 2 (0-based): an off-by-one origin or swapped axes miss it by >= 1 px
        assert centroid == pytest.approx((16.0, 16.0), abs=0.2), centroid


@relion_missing
def test_relion_log_autopick_output_reads_onto_the_particles(tmp_path):
    micrograph(tmp_path, sigma_px=6.0)
    relion(
        "relion_autopick", "--i", "micrographs.star", "--odir", "AutoPick/", "--pickname", "autopick", "--LoG",
        "--LoG_diam_min", "60", "--LoG_diam_max", "120", "--angpix", str(PIXEL), "--shrink", "1", cwd=tmp_path,
    )  # fmt: skip
    picks = read_coordinates(tmp_path / "AutoPick" / "mic1_autopick.star")
    assert picks.scores is not None and len(picks.scores) == len(picks)
    best = picks.xy[np.argsort(-picks.scores)[: len(CENTRES)]]  # the strongest LoG responses
    distances = np.linalg.norm(best[:, None] - CENTRES[None], axis=2)
    assert distances.min(axis=0).max() <= 3.0, distances.min(axis=0)  # every particle found, within 3 px
    assert distances.min(axis=1).max() <= 3.0  # and no strong pick elsewhere


def test_box_files_read_as_eman_and_cryolo_write_them(tmp_path):
    """EMAN/crYOLO: lower-left corner and size; the centre is corner + size / 2."""
    (tmp_path / "cryolo.box").write_text("40\t60\t40\t40\n160.5\t30\t40\t40\n\n")
    assert read_coordinates(tmp_path / "cryolo.box").xy.tolist() == [[60.0, 80.0], [180.5, 50.0]]
    write_box(tmp_path / "ours.box", Picks(CENTRES), box=48)
    first = (tmp_path / "ours.box").read_text().splitlines()[0].split()
    assert [float(v) for v in first] == [36.0, 56.0, 48.0, 48.0]
    assert np.allclose(read_coordinates(tmp_path / "ours.box").xy, CENTRES)
    write_relion_coordinates(tmp_path / "ours.star", Picks(CENTRES, scores=np.arange(5.0)))
    back = read_coordinates(tmp_path / "ours.star")
    assert np.allclose(back.xy, CENTRES) and back.above(3.0).xy.tolist() == CENTRES[3:].tolist()


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.box", "12 13 notanumber 40\n", "line 1"),
        ("short.box", "12 13 40\n", "is not 'x y width height'"),
        ("plain.star", "data_\nloop_\n_rlnImageName #1\na.mrcs\n", "no rlnCoordinateX"),
        ("picks.txt", "1 2\n", "unknown coordinate format"),
    ],
)
def test_bad_coordinate_files_are_named(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message) as info:
        read_coordinates(tmp_path / name)
    assert name in str(info.value)
