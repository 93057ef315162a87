"""Tomography: WBP geometry, the simulated tomogram's ground truth and halves, FSC, noise cubes,
NMSG training (quality, exact resume, determinism) and the ``nt2c simulate-tomo`` /
``nt2c denoise-tomo`` commands (tiny sizes; quality figures are in benchmarks/bench_tomo.py)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nt2c_core.acquisition import Acquisition
from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN
from nt2c_core.errors import InputError
from nt2c_core.io import read_mrc_labels, read_mrc_volume, write_mrc
from nt2c_core.metrics import fsc, psnr
from nt2c_core.settings import NMSG, NMSGConfig, TomoSimulationConfig
from nt2c_core.simulate.structure import load_structure
from nt2c_core.tomo.nmsg import _trained_config, denoise_with, train_nmsg
from nt2c_core.tomo.noise import (
    CubeMosaic,
    PowerCapped,
    fine_cap,
    fitting_block,
    noise_cubes,
    tile_power,
)
from nt2c_core.tomo.reconstruct import backproject
from nt2c_core.tomo.simulate import TomogramSimulator

TINY = TomoSimulationConfig(
    acquisition=Acquisition(pixel_size=10.0, dose=60.0, b_factor=60.0, detector="ideal"),
    size=(64, 64),
    thickness=32,
    ice_thickness=250.0,
    particles=6,
    tilt_step_deg=4.0,
    seed=3,
)
FAST = NMSGConfig(
    steps=120,
    tile_depth=16,
    tile_size=32,
    width=8,
    first_kernel=3,
    noise_cube=8,
    log_every=40,
    checkpoint_every=40,
    lr=3e-3,
    smooth=0.0,
    guide=0.0,
)


@pytest.fixture(scope="module")
def tomogram():
    return TomogramSimulator([load_structure(APOFERRITIN)], TINY).simulate(progress=False)


def test_backprojection_puts_a_point_where_its_projections_say():
    """Projections of a Gaussian blob at (x, y, z) = (40, 20, 12) px about the corner, tilted about
    y: each tilt sees it at x' = x cos t + z sin t (about the centre). WBP must put it back."""
    width, height, depth = 64, 32, 32
    x0, y0, z0 = 40.0, 20.0, 12.0
    angles = list(range(-60, 61, 3))
    xs, ys = np.arange(width), np.arange(height)
    tilts = []
    for a in angles:
        c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
        xp = (x0 - (width - 1) / 2) * c + (z0 - (depth - 1) / 2) * s + (width - 1) / 2
        tilts.append(np.exp(-((xs[None] - xp) ** 2 + (ys[:, None] - y0) ** 2) / (2 * 1.5**2)))
    volume = backproject(np.array(tilts), angles, depth)
    assert volume.shape == (depth, height, width)
    assert np.unravel_index(np.argmax(volume), volume.shape) == (int(z0), int(y0), int(x0))


def test_simulated_tomogram_has_truth_and_independent_halves(tomogram):
    t = tomogram
    assert t.noisy.shape == t.clean.shape == t.even.shape == t.odd.shape == (32, 64, 64)
    assert len(t.angles) == 31 and len(t.particles) == 6
    # particles are where the ground truth has contrast
    energy = gaussian_filter(t.clean**2, 2)
    at_particles = np.mean([energy[round(p["z"]), round(p["y"]), round(p["x"])] for p in t.particles])
    assert at_particles > 5 * np.median(energy)
    # even/odd noise is independent, and each half holds about twice the noise of the whole
    ne, no, n = t.even - t.clean, t.odd - t.clean, t.noisy - t.clean
    assert abs(np.corrcoef(ne.ravel(), no.ravel())[0, 1]) < 0.1
    assert 1.5 < ne.var() / n.var() < 2.6
    # the noisy volume carries the truth: its correlation with it is clear, and smoothing helps
    assert np.corrcoef(t.noisy.ravel(), t.clean.ravel())[0, 1] > 0.15
    assert psnr(gaussian_filter(t.noisy, 1.0), t.clean) > psnr(t.noisy, t.clean) + 1.0


def test_fsc_of_identical_and_independent_volumes():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(24, 32, 40))
    same = fsc(a, a, voxel_size=5.0)
    assert np.allclose(same.correlation, 1.0) and same.resolution(0.143) == pytest.approx(10.0)
    assert abs(fsc(a, rng.normal(size=a.shape)).correlation).mean() < 0.05
    with pytest.raises(ValueError, match="one shape"):
        fsc(a, a[:-1])


def test_noise_cubes_avoid_the_signal_and_mosaics_keep_their_statistics():
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(32, 64, 64)).astype(np.float32)
    volume[:, :32, :] += 3 * gaussian_filter(rng.normal(size=(32, 32, 64)), 3) * 10  # structure in the top half
    cubes = noise_cubes(volume, 8, 0.2)
    assert cubes.shape[1:] == (8, 8, 8) and len(cubes) >= 8
    assert abs(cubes.std() - 1.0) < 0.1  # pure unit noise, no structure
    fields = CubeMosaic(cubes).sample(3, (16, 24, 40), seed=5)
    assert fields.shape == (3, 1, 16, 24, 40)
    assert abs(float(fields.std()) - cubes.std()) < 0.1
    assert np.array_equal(fields.numpy(), CubeMosaic(cubes).sample(3, (16, 24, 40), seed=5).numpy())
    with pytest.raises(InputError, match="noise blocks"):
        noise_cubes(volume[:8, :16, :16], 8, 0.2)


def test_deep_noise_blocks_keep_the_noise_correlation_along_z():
    rng = np.random.default_rng(2)
    columns = rng.normal(size=(1, 64, 64)).astype(np.float32)  # a z-constant part, as WBP noise has
    volume = rng.normal(size=(32, 64, 64)).astype(np.float32) + 0.6 * columns

    def z_correlation(cubes, lag=6):
        f = CubeMosaic(cubes).sample(4, (32, 64, 64), seed=3)[:, 0].numpy()
        return float(np.mean(f[:, lag:] * f[:, :-lag]) / np.mean(f * f))

    cubic, deep = noise_cubes(volume, 8, 0.3), noise_cubes(volume, 8, 0.3, depth=32)
    assert deep.shape[1:] == (32, 8, 8)
    # true value 0.36 / 1.36 = 0.26; deep blocks lose it only across their z seams (expected 0.21),
    # 8-px cubes keep it only within 8 px (expected 0.07)
    assert z_correlation(deep) > 0.17 and z_correlation(cubic) < 0.1
    assert fitting_block((64, 160, 160), 16, 0.2, depth=32) == (32, 16)
    assert fitting_block((64, 160, 160), 16, 0.2) == (16, 16)
    assert fitting_block((16, 64, 64), 16, 0.2, depth=32) == (8, 8)  # too small: the larger side halves first
    # model files made before the setting existed drew their inference noise from cubic blocks
    assert _trained_config({"training": {"noise_cube": 16}}, NMSG).noise_depth == 0
    assert _trained_config({"training": {"noise_cube": 16, "noise_depth": 32}}, NMSG).noise_depth == 32


def test_power_cap_removes_noise_where_the_volume_has_none_and_keeps_the_rest():
    """A tomogram's noise leaves the missing wedge (low x-y, high z frequencies) almost empty; a
    synthesizer that puts power there (white noise, like a mosaic's seams) is capped to the volume's
    power there, and keeps its power where the volume has as much."""
    rng = np.random.default_rng(4)
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n) for n in (32, 64, 64)), indexing="ij")
    wedge = (np.abs(kz) > 0.2) & (np.hypot(ky, kx) < np.abs(kz) * 0.5)
    volume = np.fft.ifftn(np.fft.fftn(rng.normal(size=(32, 64, 64))) * ~wedge).real.astype(np.float32)
    volume /= volume.std()

    class White:
        def sample(self, count, shape, seed, device="cpu"):
            return torch.from_numpy(np.random.default_rng(seed).normal(size=(count, 1, *shape)).astype(np.float32))

    white = White().sample(16, (16, 32, 32), seed=5)[:, 0].numpy()
    assert abs(np.median(tile_power(white)) / 16 - 1) < 0.05  # white noise of variance 1: 1 per tile
    cap = PowerCapped.fit(White(), volume, (16, 32, 32), seed=0, count=64)
    noise = cap.sample(4, (32, 64, 64), seed=1)[:, 0].numpy()
    power = (np.abs(np.fft.fftn(noise, axes=(1, 2, 3))) ** 2).mean(0) / noise[0].size
    inside = wedge & (np.abs(kz) > 0.3) & (np.hypot(ky, kx) < np.abs(kz) * 0.3)  # away from the wedge's edge
    outside = ~wedge & (np.hypot(ky, kx) > 0.25)
    assert power[inside].mean() < 0.25  # white noise: 1 everywhere
    assert power[outside].mean() > 0.85
    assert np.array_equal(noise, cap.sample(4, (32, 64, 64), seed=1)[:, 0].numpy())
    # model files made before the cap existed drew uncapped inference noise
    assert _trained_config({"training": {"noise_cube": 16, "noise_depth": 32}}, NMSG).noise_cap is False
    assert _trained_config({"training": {"noise_cube": 16, "noise_cap": True}}, NMSG).noise_cap is True


class _White:
    def sample(self, count, shape, seed, device="cpu"):
        return torch.from_numpy(np.random.default_rng(seed).normal(size=(count, 1, *shape)).astype(np.float32))


def test_fine_cap_follows_a_sharp_wedge():
    """The cap measured on the whole volume (fine_cap) follows a +-60 deg missing wedge to within a
    few frequency bins, where the tile-sized cap leaks (white noise capped: about 1 outside the
    wedge, almost nothing inside, also next to its edge)."""
    rng = np.random.default_rng(3)
    shape = (48, 96, 96)
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n) for n in shape), indexing="ij")
    elevation = np.degrees(np.arctan2(np.abs(kz), np.abs(kx) + 1e-9))
    wedge = elevation > 60
    volume = np.fft.ifftn(np.fft.fftn(rng.normal(size=shape)) * ~wedge).real.astype(np.float32)
    volume /= volume.std()
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    inside = wedge & (elevation > 70) & (radius > 0.1)
    outside = ~wedge & (elevation < 50) & (radius > 0.1)
    edge = wedge & (elevation < 66) & (radius > 0.1)

    def power(synth):
        noise = synth.sample(2, shape, seed=1)[:, 0].numpy()
        return (np.abs(np.fft.fftn(noise, axes=(1, 2, 3))) ** 2).mean(0) / noise[0].size

    fine = power(fine_cap(_White(), volume, seed=0))
    coarse = power(PowerCapped.fit(_White(), volume, (16, 32, 32), seed=0, count=64))
    assert fine[inside].mean() < 0.01 < coarse[inside].mean()  # measured 0.002 and 0.06
    assert fine[edge].mean() < 0.5 * coarse[edge].mean()  # next to the edge: 0.21 and 0.55
    assert fine[outside].mean() > 0.85


def test_nmsg_beats_raw_and_resumes_exactly(tomogram, tmp_path):
    t = tomogram
    full = train_nmsg(t.noisy, FAST, t.oversmoothed, work=tmp_path / "a", progress=False)
    denoised = denoise_with(full.network, t.noisy, config=FAST, synthesizer=full.synthesizer)
    gain = psnr(denoised, t.clean) - psnr(t.noisy, t.clean)
    assert gain > 1.0, gain
    assert [r["step"] for r in full.log] == [40, 80, 120]
    # the same seed gives the same output; the draws are seeded too
    assert np.array_equal(denoised, denoise_with(full.network, t.noisy, config=FAST, synthesizer=full.synthesizer))
    # stopped at step 40 and resumed: the same weights as the uninterrupted run
    train_nmsg(t.noisy, FAST, t.oversmoothed, work=tmp_path / "b", progress=False, stop_after=40)
    resumed = train_nmsg(t.noisy, FAST, t.oversmoothed, work=tmp_path / "b", progress=False)
    for (name, a), (_, b) in zip(full.network.state_dict().items(), resumed.network.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), name
    assert resumed.log == full.log


def test_settings_are_checked_with_their_flag_names():
    with pytest.raises(InputError, match="--tile-size = 30: must be a multiple of 8"):
        NMSGConfig(tile_size=30).validate()
    with pytest.raises(InputError, match="--noise-model = 'gan3d'"):
        NMSGConfig(noise_model="gan3d").validate()
    with pytest.raises(InputError, match="all zero"):
        NMSGConfig(recon=0.0, smooth=0.0, guide=0.0).validate()
    with pytest.raises(InputError, match="tilt range"):
        TomoSimulationConfig(tilt_range_deg=(10.0, -10.0)).validate()


def _cli_args(**over):
    args = dict(
        steps=120,
        tile_depth=16,
        tile_size=32,
        width=8,
        first_kernel=3,
        noise_cube=8,
        log_every=40,
        checkpoint_every=40,
        lr=3e-3,
        smooth=0.0,
        guide=0.0,
    )
    args.update(over)
    return [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]


def test_cli_simulate_then_denoise_then_apply_the_saved_model(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert (
        main(
            [
                "simulate-tomo",
                "-o",
                str(sim),
                "--structure",
                str(APOFERRITIN),
                "--size",
                "64",
                "64",
                "--thickness",
                "32",
                "--particles",
                "4",
                "--tilt-step",
                "6",
                "--pixel-size",
                "10",
                "--ice-thickness",
                "250",
            ]
        )
        == 0
    )
    for name in ("noisy", "clean", "even", "odd", "oversmoothed"):
        volume, voxel = read_mrc_volume(sim / f"{name}.mrc")
        assert volume.shape == (32, 64, 64) and voxel == pytest.approx(10.0)
    out = tmp_path / "out" / "den.mrc"
    assert (
        main(
            [
                "denoise-tomo",
                str(sim / "noisy.mrc"),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--oversmoothed",
                str(sim / "oversmoothed.mrc"),
                *_cli_args(),
            ]
        )
        == 0
    )
    denoised, voxel = read_mrc_volume(out)
    assert voxel == pytest.approx(10.0) and denoised.shape == (32, 64, 64)
    model = tmp_path / "out" / "den.nmsg.pt"
    assert model.is_file() and (tmp_path / "out" / "den.nmsg.pt.loss.csv").is_file()
    labels = read_mrc_labels(out)
    assert any("denoise-tomo NMSG model-sha256=" in label for label in labels), labels
    again = tmp_path / "out" / "den2.mrc"
    assert (
        main(["denoise-tomo", str(sim / "noisy.mrc"), "-o", str(again), "--model", str(model), "--device", "cpu"]) == 0
    )
    assert np.allclose(read_mrc_volume(again)[0], denoised, atol=1e-4)
    # the raw tomogram was not touched, and the denoised one is closer to the truth
    clean = read_mrc_volume(sim / "clean.mrc")[0]
    raw = read_mrc_volume(sim / "noisy.mrc")[0]
    assert psnr(denoised, clean) > psnr(raw, clean) + 1.0


def test_cli_bad_inputs_exit_2_with_the_file_named(tmp_path, capsys):
    image = tmp_path / "image.mrc"
    write_mrc(image, np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32), 5.0)
    assert main(["denoise-tomo", str(image), "-o", str(tmp_path / "x.mrc")]) == 2
    assert f"{image}: is not a volume" in capsys.readouterr().err
    volume = tmp_path / "vol.mrc"
    write_mrc(volume, np.zeros((16, 32, 32), np.float32), 5.0)
    assert main(["denoise-tomo", str(volume), "-o", str(volume)]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert main(["denoise-tomo", str(volume), "-o", str(tmp_path / "y.mrc"), *_cli_args()]) == 2
    assert f"{volume}: is constant" in capsys.readouterr().err
    assert main(["denoise-tomo", str(tmp_path / "missing.mrc"), "-o", str(tmp_path / "z.mrc")]) == 2
    assert "file not found" in capsys.readouterr().err
    gan = tmp_path / "noise_gan.pt"
    from nt2c_core.models.gan import NoiseGenerator
    from nt2c_core.models.store import save_model

    save_model(gan, NoiseGenerator(), {"kind": "noise-gan"})
    rng = np.random.default_rng(0)
    write_mrc(volume, rng.normal(size=(16, 32, 32)).astype(np.float32), 5.0)
    assert main(["denoise-tomo", str(volume), "-o", str(tmp_path / "w.mrc"), "--model", str(gan)]) == 2
    assert "expected a 'tomo-denoiser' model" in capsys.readouterr().err
    settings = tmp_path / "nmsg.settings.json"
    settings.write_text('{"steps": 0}')  # the Scipion plugin's --settings file, with a value NMSG refuses
    assert main(["denoise-tomo", str(volume), "-o", str(tmp_path / "v.mrc"), "--settings", str(settings)]) == 2
    assert "steps = 0: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "v.mrc").exists()


def test_flipped_training_tiles_and_flip_averaged_inference():
    """Training tiles flip with their targets (and a run without flips draws nothing extra, so its
    tiles stay as before); inference with flips is the mean of F(f(F(v))) over the 8 flips: equal
    to f(v) for a network that commutes with flips, and different for one that does not."""
    import torch

    from nt2c_core.tomo.nmsg import FLIPS, _flips, apply_flipped, apply_network
    from nt2c_core.tomo.noise import crop_tile

    rng = np.random.default_rng(0)
    volume = rng.normal(size=(16, 24, 24)).astype(np.float32)
    assert np.array_equal(crop_tile(volume, (2, 3, 4), (8, 8, 8), (1, 0, 1)), np.flip(volume[2:10, 3:11, 4:12], (0, 2)))
    a, b = np.random.default_rng([0, 5]), np.random.default_rng([0, 5])
    assert not _flips(a, 4, False).any() and a.integers(1 << 30) == b.integers(1 << 30)
    assert sorted(map(len, FLIPS)) == [0, 1, 1, 1, 2, 2, 2, 3]

    symmetric = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
    skewed = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        symmetric.weight.fill_(1 / 27)
        skewed.weight.zero_()
        skewed.weight[0, 0, 2, 2, 2] = 1.0  # a shift: flips turn it into the opposite shift
    plain = apply_network(symmetric, volume, margin=4, tile=(8, 16, 16))
    assert np.allclose(apply_flipped(symmetric, volume, 4, flips=True), apply_network(symmetric, volume, 4), atol=1e-5)
    assert np.allclose(apply_network(symmetric, volume, 4), plain, atol=1e-5)  # tiling does not matter
    shifted, averaged = apply_network(skewed, volume, 4), apply_flipped(skewed, volume, 4, flips=True)
    manual = np.mean([np.flip(apply_network(skewed, np.ascontiguousarray(np.flip(volume, f)), 4), f) for f in FLIPS], 0)
    assert np.allclose(averaged, manual, atol=1e-5) and not np.allclose(averaged, shifted, atol=1e-2)


def test_tile_by_tile_flips_and_in_place_inference_match_the_copying_route():
    """Flips applied tile by tile (views, no flipped copy of the volume) equal flipping the whole
    volume; the noise mosaic built straight into its window equals the mosaic cut afterwards; the
    in-place route of ``nt2c denoise-tomo`` (``overwrite``) gives the same volume as the copying
    one, and the copying one leaves the caller's array alone."""
    from nt2c_core.models.store import build_network
    from nt2c_core.tomo.nmsg import FLIPS, apply_network

    rng = np.random.default_rng(1)
    volume = rng.normal(size=(24, 40, 36)).astype(np.float32)
    torch.manual_seed(0)
    net = build_network(NMSG.architecture())
    for axes in FLIPS[1:]:
        whole = np.flip(apply_network(net, np.ascontiguousarray(np.flip(volume, axes)), 4, tile=(8, 16, 16)), axes)
        assert np.array_equal(apply_network(net, volume, 4, tile=(8, 16, 16), axes=axes), whole)

    cubes = rng.normal(size=(12, 8, 4, 4)).astype(np.float32)
    mosaic = CubeMosaic(cubes).sample(2, (19, 13, 11), seed=5).numpy()
    # the same draws, the whole mosaic assembled first and cut afterwards
    draw = np.random.default_rng(5)
    nd, nh, nw = 19 // 8 + 2, 13 // 4 + 2, 11 // 4 + 2
    pick = draw.integers(12, size=2 * nd * nh * nw)
    flips = draw.integers(2, size=(len(pick), 3)).astype(bool)
    oz, oy, ox = draw.integers(8), draw.integers(4), draw.integers(4)
    centred = cubes - cubes.mean(axis=(1, 2, 3), keepdims=True)
    full = np.zeros((2, nd * 8, nh * 4, nw * 4), np.float32)
    for n, (c, i, j, k) in enumerate(np.ndindex(2, nd, nh, nw)):
        block = np.flip(centred[pick[n]], tuple(np.flatnonzero(flips[n])))
        full[c, i * 8 : (i + 1) * 8, j * 4 : (j + 1) * 4, k * 4 : (k + 1) * 4] = block
    assert np.array_equal(mosaic[:, 0], full[:, oz : oz + 19, oy : oy + 13, ox : ox + 11])

    config = dataclasses.replace(NMSG, noise_cube=8, noise_depth=8, infer_draws=3)
    kept = volume.copy()
    copied = denoise_with(net, volume, 4, "cpu", config)
    assert np.array_equal(volume, kept)  # the caller's array is untouched
    in_place = denoise_with(net, volume, 4, "cpu", config, overwrite=True)
    assert np.array_equal(in_place, copied) and not np.array_equal(volume, kept)


def test_direct_unet3d_by_default_and_older_model_files_stay_residual(tmp_path):
    import json

    import torch

    from nt2c_core.models.registry import build, check_architecture
    from nt2c_core.models.store import load_model, save_model

    assert NMSG.architecture()["residual"] is False
    direct = build({**NMSG.architecture(), "width": 4, "first_kernel": 3})
    residual = build({**NMSG.architecture(), "width": 4, "first_kernel": 3, "residual": True})
    residual.load_state_dict(direct.state_dict())
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(residual(x) - direct(x), x, atol=1e-5)
    assert "residual='yes'" in check_architecture({"name": "unet3d", "residual": "yes"})
    # a model file written before the switch existed has no 'residual' key: it was residual
    path = save_model(tmp_path / "old.nmsg.pt", residual, {"kind": "tomo-denoiser"})
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["architecture"].pop("residual")
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, path)
    loaded, _ = load_model(path, kind="tomo-denoiser")
    with torch.inference_mode():
        assert loaded.residual and torch.allclose(loaded(x), residual(x), atol=1e-6)
