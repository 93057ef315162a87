"""Particles and SR3: true maps, direct Fourier reconstruction with CTFs and offsets, RELION STAR
in/out, the SR3 restorer (quality, exact resume, batch-independent seeding, no invention of the
training structure) and the ``nt2c simulate-particles`` / ``train-restorer`` / ``restore-particles``
/ ``reconstruct`` commands (tiny sizes; quality figures are in benchmarks/bench_particles.py)."""

import numpy as np
import pytest
import torch

from nt2c_core.acquisition import Acquisition
from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN, PROTEASOME
from nt2c_core.errors import InputError
from nt2c_core.io import read_mrc, read_mrc_labels, write_mrc
from nt2c_core.metrics import fsc, psnr
from nt2c_core.particles.maps import density_map, map_resolution, reconstruct, spherical_mask
from nt2c_core.particles.simulate import simulate_particles
from nt2c_core.particles.sr3 import restore_images, train_restorer
from nt2c_core.particles.star import ParticleTable
from nt2c_core.settings import ParticleSimulationConfig, RestorerConfig
from nt2c_core.simulate.potential import Projector
from nt2c_core.simulate.structure import load_structure

ACQ = Acquisition(pixel_size=6.0, dose=20.0, b_factor=60.0)
TINY = RestorerConfig(
    steps=240,
    batch_size=8,
    width=16,
    levels=3,
    refine_steps=80,
    refine_width=8,
    refine_pool=64,
    log_every=40,
    checkpoint_every=40,
    lr=1e-3,
    batch=32,
)


@pytest.fixture(scope="module")
def structures():
    return {"apoferritin": load_structure(APOFERRITIN), "proteasome": load_structure(PROTEASOME)}


@pytest.fixture(scope="module")
def particles(structures):
    """Apoferritin particles (box 32, 6 Å/px) with offsets: 400 for training, 64 held out."""
    train = simulate_particles(
        [structures["apoferritin"]],
        ParticleSimulationConfig(ACQ, box=32, count=400, max_shift=2.0, seed=1),
        progress=False,
    )
    test = simulate_particles(
        [structures["apoferritin"]],
        ParticleSimulationConfig(ACQ, box=32, count=64, max_shift=2.0, seed=2),
        progress=False,
    )
    return train, test


@pytest.fixture(scope="module")
def restorer(particles):
    train, _ = particles
    return train_restorer(train.noisy, train.clean, TINY, progress=False)


def test_true_map_projects_to_the_particle_projection(structures):
    """The 3-D potential summed along z (times the pixel size) is the projector's projected
    potential: the map and the images share atoms, form factors and centre."""
    s = structures["proteasome"]
    volume = density_map(s, 32, 6.0, 60.0)
    image = Projector(s, 32, 6.0, 60.0).project(np.eye(3)).numpy()
    assert np.corrcoef(volume.sum(0).ravel() * 6.0, image.ravel())[0, 1] > 0.999
    assert volume.sum() * 6.0 == pytest.approx(image.sum(), rel=1e-3)


def test_reconstruction_with_ctf_and_offsets_recovers_the_true_map(structures, particles):
    """Clean CTF-modulated particles with offsets, inserted with CTF weighting: FSC 0.5 against the
    true map at Nyquist (12 Å); ignoring the offsets or the CTF must cost resolution."""
    train, _ = particles
    truth = density_map(structures["apoferritin"], 32, 6.0, 60.0)
    sl = slice(0, 200)
    good = reconstruct(train.clean[sl], train.rotations[sl], ACQ, train.defocus[sl], train.shifts[sl])
    assert map_resolution(good, truth, 6.0, 0.5) == pytest.approx(12.0, abs=0.5)
    no_shift = reconstruct(train.clean[sl], train.rotations[sl], ACQ, train.defocus[sl], None)
    no_ctf = reconstruct(train.clean[sl], train.rotations[sl])
    mask = spherical_mask(32, 14)
    score = {
        name: fsc(v * mask, truth * mask, 6.0).correlation.mean()
        for name, v in (("good", good), ("no_shift", no_shift), ("no_ctf", no_ctf))
    }
    assert score["good"] > score["no_shift"] + 0.05 and score["good"] > score["no_ctf"] + 0.05


def test_restorer_beats_raw_and_keeps_the_structure(particles, restorer, structures):
    """Held-out particles: a PSNR gain over raw and over the best Gaussian is measured, and the
    reconstruction of restored particles correlates with the true map at least as the raw one."""
    from scipy.ndimage import gaussian_filter

    _, test = particles
    out = restore_images(restorer.network, test.noisy, restorer.signal_scale, TINY, progress=False)
    raw = np.mean([psnr(a, b) for a, b in zip(test.noisy, test.clean)])
    gauss = max(np.mean([psnr(gaussian_filter(a, s), b) for a, b in zip(test.noisy, test.clean)]) for s in (1, 1.5, 2))
    restored = np.mean([psnr(a, b) for a, b in zip(out, test.clean)])
    assert restored > raw + 3.0 and restored > gauss
    assert out.dtype == np.float32 and out.shape == test.noisy.shape
    assert np.isfinite(restorer.log[-1]["loss"]) and restorer.log[-1]["phase"] == "refine"


def test_restoration_of_a_particle_does_not_depend_on_its_batch(particles, restorer):
    _, test = particles
    from dataclasses import replace

    cfg = replace(TINY, batch=5)
    whole = restore_images(restorer.network, test.noisy[:12], restorer.signal_scale, TINY, progress=False)
    batched = restore_images(restorer.network, test.noisy[:12], restorer.signal_scale, cfg, progress=False)
    alone = restore_images(restorer.network, test.noisy[7:8], restorer.signal_scale, TINY, indices=[7], progress=False)
    np.testing.assert_allclose(whole, batched, atol=1e-4)
    np.testing.assert_allclose(whole[7], alone[0], atol=1e-4)


def test_stopped_training_resumes_to_the_same_weights(particles, tmp_path):
    train, _ = particles
    from dataclasses import replace

    cfg = replace(TINY, steps=60, refine_steps=20, refine_pool=16, checkpoint_every=20, log_every=20)
    whole = train_restorer(train.noisy[:100], train.clean[:100], cfg, tmp_path / "a", progress=False)
    train_restorer(train.noisy[:100], train.clean[:100], cfg, tmp_path / "b", progress=False, stop_after=40)
    resumed = train_restorer(train.noisy[:100], train.clean[:100], cfg, tmp_path / "b", progress=False)
    for (k, a), b in zip(whole.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in whole.log] == [r["loss"] for r in resumed.log]


def test_a_model_trained_on_one_structure_does_not_paint_it_on_another(structures, tmp_path):
    """Hallucination check: a restorer trained only on proteasome (B) restores apoferritin (A)
    particles; the reconstruction from them must stay closer to A's true map than to B's."""
    acq = ACQ
    b = simulate_particles(
        [structures["proteasome"]], ParticleSimulationConfig(acq, box=32, count=300, seed=5), progress=False
    )
    a = simulate_particles(
        [structures["apoferritin"]], ParticleSimulationConfig(acq, box=32, count=150, seed=6), progress=False
    )
    model = train_restorer(b.noisy, b.clean, TINY, progress=False)
    out = restore_images(model.network, a.noisy, model.signal_scale, TINY, progress=False)
    volume = reconstruct(out, a.rotations, acq, a.defocus)
    mask = spherical_mask(32, 14)
    to_a = fsc(volume * mask, density_map(structures["apoferritin"], 32, 6.0, 60.0) * mask, 6.0).correlation.mean()
    to_b = fsc(volume * mask, density_map(structures["proteasome"], 32, 6.0, 60.0) * mask, 6.0).correlation.mean()
    assert to_a > to_b + 0.2


def test_star_round_trip_keeps_every_column_and_names_never_collide(tmp_path, structures, restorer):
    """Two stacks of the same name in different folders, one STAR: the restored STAR keeps every
    column and value but rlnImageName, whose stacks are distinct files with the right images."""
    acq = ACQ
    sim = simulate_particles(
        [structures["apoferritin"]], ParticleSimulationConfig(acq, box=32, count=6, seed=7), progress=False
    )
    for folder, part in (("a", sim.noisy[:3]), ("b", sim.noisy[3:])):
        (tmp_path / folder).mkdir()
        write_mrc(tmp_path / folder / "particles.mrcs", part, 6.0)
    table = ParticleTable.for_stack("x", 6, acq, 32)
    table.set_geometry(sim.rotations, sim.shifts, sim.defocus)
    table.particles["rlnImageName"] = [f"{i % 3 + 1:06d}@{'a' if i < 3 else 'b'}/particles.mrcs" for i in range(6)]
    table.particles["rlnClassNumber"] = np.arange(6) + 1
    table.particles["rlnMicrographName"] = [f"mic {i}.mrc" for i in range(6)]
    table.write(tmp_path / "in.star")
    from nt2c_core.particles.sr3 import save_restorer

    save_restorer(tmp_path / "r.pt", restorer, TINY, 6.0, 32, {})
    assert (
        main(
            [
                "restore-particles",
                str(tmp_path / "in.star"),
                "-o",
                str(tmp_path / "out"),
                "--model",
                str(tmp_path / "r.pt"),
                "--sample-steps",
                "2",
            ]
        )
        == 0
    )
    before, after = ParticleTable.read(tmp_path / "in.star"), ParticleTable.read(tmp_path / "out" / "in.star")
    assert list(before.particles.columns) == list(after.particles.columns)
    for column in before.particles.columns:
        if column != "rlnImageName":
            assert list(before.particles[column]) == list(after.particles[column]), column
    stacks = sorted({name.split("@")[1] for name in after.particles["rlnImageName"]})
    assert len(stacks) == 2
    for name, truth in zip(after.particles["rlnImageName"], sim.clean):
        index, stack = name.split("@")
        restored = read_mrc(tmp_path / "out" / stack, allow_stack=True)[0][int(index) - 1]
        assert np.corrcoef(restored.ravel(), truth.ravel())[0, 1] > 0.5  # the same particle, restored
    assert "model-sha256=" in " ".join(read_mrc_labels(tmp_path / "out" / stacks[0]))
    assert read_mrc(tmp_path / "out" / stacks[0], allow_stack=True)[1] == pytest.approx(6.0)


def test_cli_simulate_train_restore_reconstruct(tmp_path, capsys):
    sim, model = tmp_path / "sim", tmp_path / "r.pt"
    assert (
        main(
            [
                "simulate-particles",
                "-o",
                str(sim),
                "--structure",
                str(APOFERRITIN),
                "--count",
                "24",
                "--box",
                "32",
                "--pixel-size",
                "6",
                "--dose",
                "20",
                "--max-shift",
                "1",
            ]
        )
        == 0
    )
    assert len(read_mrc(sim / "particles.mrcs", allow_stack=True)[0]) == 24
    assert (
        main(
            [
                "train-restorer",
                str(sim),
                "-o",
                str(model),
                "--steps",
                "6",
                "--refine-steps",
                "3",
                "--refine-pool",
                "4",
                "--batch-size",
                "2",
                "--width",
                "4",
                "--refine-width",
                "4",
            ]
        )
        == 0
    )
    assert (tmp_path / "r.pt.loss.csv").read_text().startswith("phase,step,loss")
    assert (
        main(["restore-particles", str(sim / "particles.mrcs"), "-o", str(tmp_path / "out"), "--model", str(model)])
        == 0
    )
    out, px = read_mrc(tmp_path / "out" / "particles_restored.mrcs", allow_stack=True)
    assert out.shape == (24, 32, 32) and px == pytest.approx(6.0)
    assert (
        main(
            [
                "reconstruct",
                str(sim / "particles.star"),
                "-o",
                str(tmp_path / "map.mrc"),
                "--reference",
                str(sim / "map_0.mrc"),
            ]
        )
        == 0
    )
    assert "FSC against" in capsys.readouterr().out
    assert (tmp_path / "map.fsc.csv").read_text().startswith("frequency_1_per_A,fsc")


def test_cli_refuses_bad_input_naming_the_file(tmp_path, capsys):
    write_mrc(tmp_path / "flat.mrcs", np.zeros((3, 32, 32), np.float32), 6.0)
    write_mrc(tmp_path / "denoiser.mrc", np.ones((8, 8), np.float32), 6.0)
    from nt2c_core.general import GENERAL_MODEL

    assert (
        main(
            ["restore-particles", str(tmp_path / "flat.mrcs"), "-o", str(tmp_path / "o"), "--model", str(GENERAL_MODEL)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "expected a 'particle-restorer' model" in err and "Traceback" not in err
    assert main(["reconstruct", str(tmp_path / "missing.star"), "-o", str(tmp_path / "m.mrc")]) == 2
    assert "missing.star: file not found" in capsys.readouterr().err
    with pytest.raises(InputError, match="particle 1 is constant"):
        from nt2c_core.particles.sr3 import NormalizedStack

        NormalizedStack.of(np.zeros((3, 32, 32), np.float32), "flat.mrcs")
    assert main(["simulate-particles", "-o", str(tmp_path / "s"), "--structure", str(APOFERRITIN), "--box", "33"]) == 2
    assert "--box = 33" in capsys.readouterr().err


def test_real_noise_patches_replace_the_simulated_noise(structures):
    """--noise patches: each particle's noise is a real patch (its texture) scaled to the simulated
    noise's level; the clean images are unchanged; too small patches are refused."""
    rng = np.random.default_rng(0)
    stripes = np.repeat(rng.standard_normal((6, 1, 48)), 48, axis=1).astype(np.float32)  # column-constant texture
    base = ParticleSimulationConfig(ACQ, box=32, count=8, seed=3)
    simulated = simulate_particles([structures["apoferritin"]], base, progress=False)
    from dataclasses import replace

    real = simulate_particles(
        [structures["apoferritin"]], replace(base, noise="patches"), noise_patches=stripes, progress=False
    )
    np.testing.assert_allclose(real.clean, simulated.clean)
    noise = real.noisy - real.clean
    np.testing.assert_allclose(noise.std((1, 2)), (simulated.noisy - simulated.clean).std((1, 2)), rtol=1e-3)
    assert np.abs(np.diff(noise, axis=1)).max() < 1e-4 < np.abs(np.diff(noise, axis=2)).max()  # the stripes are kept
    with pytest.raises(InputError, match="smaller than the box"):
        simulate_particles(
            [structures["apoferritin"]],
            replace(base, noise="patches"),
            noise_patches=stripes[:, :16, :16],
            progress=False,
        )
    with pytest.raises(InputError, match="needs the data set's noise patches"):
        simulate_particles([structures["apoferritin"]], replace(base, noise="patches"), progress=False)


def test_unet_restorer_is_a_method_of_the_same_stage(tmp_path, capsys, particles):
    """`train-restorer --method unet`: the U-Net baseline trained on the same pairs, written as a
    particle restorer (method U-Net, training references) that `restore-particles` applies in one
    pass with the invention check; it gains PSNR on held-out particles; draws are refused."""
    train, test = particles
    (tmp_path / "pairs").mkdir()
    write_mrc(tmp_path / "pairs" / "particles.mrcs", train.noisy, 6.0)
    write_mrc(tmp_path / "pairs" / "clean.mrcs", train.clean, 6.0)
    write_mrc(tmp_path / "test.mrcs", test.noisy, 6.0)
    model = tmp_path / "unet.pt"
    args = ["--steps", "300", "--width", "16", "--batch-size", "8", "--lr", "1e-3"]
    assert main(["train-restorer", str(tmp_path / "pairs"), "-o", str(model), "--method", "unet", *args]) == 0
    from nt2c_core.models.store import load_model_with_extras

    _, meta, extras = load_model_with_extras(model)
    assert meta["method"] == "U-Net" and meta["architecture"]["name"] == "unet"
    assert extras["invention_references"].shape[-1] == 32
    assert (
        main(["restore-particles", str(tmp_path / "test.mrcs"), "-o", str(tmp_path / "out"), "--model", str(model)])
        == 0
    )
    restored, _ = read_mrc(tmp_path / "out" / "test_restored.mrcs", allow_stack=True)
    gain = np.mean([psnr(a, b) - psnr(c, b) for a, b, c in zip(restored, test.clean, test.noisy)])
    assert gain > 2.0, gain
    assert "U-Net" in " ".join(read_mrc_labels(tmp_path / "out" / "test_restored.mrcs"))
    assert (tmp_path / "out" / "invention.json").exists()
    capsys.readouterr()
    rc = main(["restore-particles", str(tmp_path / "test.mrcs"), "-o", str(tmp_path / "v"), "--model", str(model),
               "--samples", "2", "--uncertainty"])  # fmt: skip
    assert rc == 2 and "no variance over draws" in capsys.readouterr().err
