"""RELION conformance, judged by RELION itself (Debian's ``relion`` package, CPU build, installed by
``.ci/run``): every particle STAR file nt2c writes reconstructs at Nyquist with
``relion_reconstruct``, and ``nt2c reconstruct`` reaches Nyquist on STAR files RELION writes
(``relion_project``), in the 3.1 layout and the 3.0 one (no optics table, origins in pixels).

Clean particles (apoferritin, box 32, 6 Å/px: Nyquist 12 Å) with offsets of up to 2 px, so an
origin of the wrong sign costs the map its high resolution (the bug these tests were written for).
"""

import shutil
import subprocess

import numpy as np
import pytest
import starfile

from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN
from nt2c_core.io import read_mrc_volume
from nt2c_core.particles.maps import map_resolution, spherical_mask
from nt2c_core.particles.star import ParticleTable

pytestmark = pytest.mark.skipif(
    shutil.which("relion_reconstruct") is None,
    reason="RELION is not installed (apt-get install relion; .ci/run installs it)",
)
NYQUIST = 12.0


def relion(*args, cwd):
    """Run a RELION program; its output in the assertion message when it fails."""
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def score(map_path, truth_path):
    """(FSC 0.143 resolution [Å], masked correlation) of a map against the true map."""
    volume, px = read_mrc_volume(map_path)
    truth, _ = read_mrc_volume(truth_path)
    mask = spherical_mask(volume.shape[0], 0.45 * volume.shape[0])
    return map_resolution(volume, truth, px, 0.143), float(
        np.corrcoef((volume * mask).ravel(), (truth * mask).ravel())[0, 1]
    )


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """``nt2c simulate-particles`` (white contrast, the default), and a STAR naming the clean stack."""
    folder = tmp_path_factory.mktemp("relion")
    assert (
        main(
            [
                "simulate-particles",
                "-o",
                str(folder / "sim"),
                "--structure",
                str(APOFERRITIN),
                "--count",
                "400",
                "--box",
                "32",
                "--pixel-size",
                "6",
                "--dose",
                "20",
                "--max-shift",
                "2",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    sim = folder / "sim"
    table = ParticleTable.read(sim / "particles.star")
    table.with_images(
        [name.replace("@particles.mrcs", "@clean.mrcs") for name in table.particles["rlnImageName"]]
    ).write(sim / "clean.star")
    return sim


def test_relion_reconstructs_the_star_nt2c_writes_at_nyquist(simulated):
    relion("relion_reconstruct", "--i", "clean.star", "--o", "relion.mrc", "--ctf", cwd=simulated)
    resolution, cc = score(simulated / "relion.mrc", simulated / "map_0.mrc")
    assert resolution == pytest.approx(NYQUIST) and cc > 0.9, (resolution, cc)


def test_the_origin_sign_matters_at_this_size(simulated):
    """The control that makes the two Nyquist tests able to fail: RELION's map from the same STAR
    with the origins negated (the former writer's sign) is far from the truth."""
    table = starfile.read(simulated / "clean.star", always_dict=True)
    table["particles"]["rlnOriginXAngst"] *= -1
    table["particles"]["rlnOriginYAngst"] *= -1
    starfile.write(table, simulated / "negated.star")
    relion("relion_reconstruct", "--i", "negated.star", "--o", "negated.mrc", "--ctf", cwd=simulated)
    resolution, cc = score(simulated / "negated.mrc", simulated / "map_0.mrc")
    assert resolution > 1.5 * NYQUIST and cc < 0.8, (resolution, cc)


def test_nt2c_reconstructs_relion_projections_at_nyquist(simulated):
    """relion_project applies each row's orientation, origin and CTF to the true map; nt2c
    reconstruct of RELION's STAR (white contrast, as RELION's projections are) reaches Nyquist."""
    relion("relion_project", "--i", "map_0.mrc", "--ang", "clean.star", "--ctf", "--o", "proj", cwd=simulated)
    assert (
        main(
            [
                "reconstruct",
                str(simulated / "proj.star"),
                "-o",
                str(simulated / "nt2c_of_relion.mrc"),
                "--reference",
                str(simulated / "map_0.mrc"),
            ]
        )
        == 0
    )
    resolution, cc = score(simulated / "nt2c_of_relion.mrc", simulated / "map_0.mrc")
    assert resolution == pytest.approx(NYQUIST) and cc > 0.9, (resolution, cc)
    # and nt2c's own round trip, on the stacks it writes
    assert main(["reconstruct", str(simulated / "clean.star"), "-o", str(simulated / "nt2c.mrc")]) == 0
    resolution, cc = score(simulated / "nt2c.mrc", simulated / "map_0.mrc")
    assert resolution == pytest.approx(NYQUIST) and cc > 0.9, (resolution, cc)


def test_relion_30_layout_means_the_same_to_relion_and_to_nt2c(simulated):
    """A RELION 3.0 file (no optics table; rlnOriginX/Y in pixels; pixel size from detector pixel
    and magnification; optics in every row): both programs reconstruct it at Nyquist."""
    blocks = starfile.read(simulated / "clean.star", always_dict=True)
    optics, p = blocks["optics"].iloc[0], blocks["particles"].copy()
    px = float(optics["rlnImagePixelSize"])
    p["rlnOriginX"], p["rlnOriginY"] = p.pop("rlnOriginXAngst") / px, p.pop("rlnOriginYAngst") / px
    p["rlnVoltage"], p["rlnSphericalAberration"] = float(optics["rlnVoltage"]), float(optics["rlnSphericalAberration"])
    p["rlnAmplitudeContrast"] = float(optics["rlnAmplitudeContrast"])
    p["rlnDetectorPixelSize"], p["rlnMagnification"] = 5.0, 5.0 * 1e4 / px
    starfile.write({"": p.drop(columns=["rlnOpticsGroup", "nt2cStructure"])}, simulated / "relion30.star")
    assert "data_optics" not in (simulated / "relion30.star").read_text()
    relion("relion_reconstruct", "--i", "relion30.star", "--o", "relion30.mrc", "--ctf", cwd=simulated)
    assert main(["reconstruct", str(simulated / "relion30.star"), "-o", str(simulated / "nt2c30.mrc")]) == 0
    for name in ("relion30.mrc", "nt2c30.mrc"):
        resolution, cc = score(simulated / name, simulated / "map_0.mrc")
        assert resolution == pytest.approx(NYQUIST) and cc > 0.9, (name, resolution, cc)


def test_dark_contrast_is_a_setting_and_says_so(simulated, tmp_path):
    """--contrast dark writes physical contrast: RELION's map of it is the negative of the truth,
    and nt2c reconstruct --contrast dark reads it back positive."""
    assert (
        main(
            [
                "simulate-particles",
                "-o",
                str(tmp_path / "dark"),
                "--structure",
                str(APOFERRITIN),
                "--count",
                "400",
                "--box",
                "32",
                "--pixel-size",
                "6",
                "--dose",
                "20",
                "--max-shift",
                "2",
                "--seed",
                "3",
                "--contrast",
                "dark",
            ]
        )
        == 0
    )
    dark = tmp_path / "dark"
    table = ParticleTable.read(dark / "particles.star")
    table.with_images([n.replace("@particles.mrcs", "@clean.mrcs") for n in table.particles["rlnImageName"]]).write(
        dark / "clean.star"
    )
    relion("relion_reconstruct", "--i", "clean.star", "--o", "relion.mrc", "--ctf", cwd=dark)
    assert score(dark / "relion.mrc", dark / "map_0.mrc")[1] < -0.9
    assert main(["reconstruct", str(dark / "clean.star"), "-o", str(dark / "nt2c.mrc"), "--contrast", "dark"]) == 0
    assert score(dark / "nt2c.mrc", dark / "map_0.mrc")[1] > 0.9
    from nt2c_core.io import read_mrc_labels

    assert any("contrast dark" in label for label in read_mrc_labels(dark / "clean.mrcs"))
    assert any("contrast white" in label for label in read_mrc_labels(simulated / "clean.mrcs"))
