"""Noise transfer: SSIM extraction on micrographs with known particles, the GAN against a known
noise process, re-weighting coefficients, and extraction errors."""

import errno
import os
import stat

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from nt2c_core.data import PROTEASOME
from nt2c_core.denoise import Denoiser
from nt2c_core.errors import InputError
from nt2c_core.io import atomic_write, read_mrc, read_star, write_mrc
from nt2c_core.models import load_model
from nt2c_core.noise.extract import ExtractionSettings, extract_noise, find_background, min_pairwise_ssim
from nt2c_core.noise.reweight import fit_coefficients, reweight
from nt2c_core.noise.synthesize import GANConfig, train_noise_gan
from nt2c_core.simulate import Acquisition, MicrographSimulator, SimulationConfig, load_structure

PATCH = 96


def test_min_pairwise_ssim_matches_eq3_by_hand():
    rng = np.random.default_rng(0)
    tile = rng.random((1, 8, 8))
    quads = [tile[0, :4, :4], tile[0, :4, 4:], tile[0, 4:, :4], tile[0, 4:, 4:]]
    c1, c2 = 1e-4, 9e-4

    def eq3(a, b):
        cov = ((a - a.mean()) * (b - b.mean())).mean()
        return (
            (2 * a.mean() * b.mean() + c1)
            * (2 * cov + c2)
            / ((a.mean() ** 2 + b.mean() ** 2 + c1) * (a.var() + b.var() + c2))
        )

    expected = min(eq3(quads[i], quads[j]) for i in range(4) for j in range(i + 1, 4))
    assert min_pairwise_ssim(tile, 2, c1, c2)[0] == pytest.approx(expected, rel=1e-12)
    flat = np.full((1, 8, 8), 0.5)
    assert min_pairwise_ssim(flat, 2, c1, c2)[0] == pytest.approx(1.0)
    blob = flat.copy()
    blob[0, :4, :4] = 0.1  # a dark particle in one quadrant
    assert min_pairwise_ssim(blob, 2, c1, c2)[0] < 0.5


@pytest.fixture(scope="module")
def micrographs():
    cfg = SimulationConfig(
        Acquisition(pixel_size=2.0, dose=40.0), size=(512, 512), particles=8, defocus_um=(1.2, 2.8), seed=5
    )
    structure = load_structure(PROTEASOME)
    sim = MicrographSimulator([structure], cfg)
    return [sim.simulate(i) for i in range(3)], structure.radius / 2.0


def _tile_classes(origins, particles, radius):
    """(truly empty: no particle disc touches the tile, occupied: a particle centre within the tile
    grown by radius/2); tiles that only graze a particle are neither."""
    xy = np.array([[p["x"], p["y"]] for p in particles])
    empty, occupied = [], []
    for y, x in origins:
        dist = np.hypot(np.clip(xy[:, 0], x, x + PATCH) - xy[:, 0], np.clip(xy[:, 1], y, y + PATCH) - xy[:, 1])
        empty.append(bool(np.all(dist > radius)))
        grow = radius / 2
        occupied.append(
            bool(
                np.any(
                    (xy[:, 0] > x - grow)
                    & (xy[:, 0] < x + PATCH + grow)
                    & (xy[:, 1] > y - grow)
                    & (xy[:, 1] < y + PATCH + grow)
                )
            )
        )
    return np.array(empty), np.array(occupied)


def test_extraction_keeps_background_tiles_on_micrographs_with_known_particles(trained, micrographs):
    """Measured when written: all chosen tiles empty; about 85 % of the truly empty tiles found."""
    mics, radius = micrographs
    denoiser = Denoiser.from_file(trained[1].model_path)
    settings = ExtractionSettings(patch=PATCH, step=PATCH // 2, rule="ssim")  # paper's N = 4, threshold 0.7
    chosen_occupied = chosen = empty_total = empty_found = 0
    for mic in mics:
        found = find_background(mic.noisy, denoiser.denoise(mic.noisy), settings)
        empty, occupied = _tile_classes(found.all_origins, mic.particles, radius)
        keep = found.all_scores > settings.threshold
        chosen += keep.sum()
        chosen_occupied += (keep & occupied).sum()
        empty_total += empty.sum()
        empty_found += (keep & empty).sum()
        assert np.array_equal(
            found.patches[0],
            mic.noisy[
                found.origins[0][0] : found.origins[0][0] + PATCH, found.origins[0][1] : found.origins[0][1] + PATCH
            ],
        )
    assert chosen > 0
    assert chosen_occupied / chosen <= 0.05
    assert empty_found / empty_total >= 0.5


def test_extract_noise_reports_empty_micrographs_and_refuses_too_few_patches(tmp_path, micrographs):
    mics, _ = micrographs
    good = write_mrc(tmp_path / "good.mrc", mics[0].noisy, 2.0)
    crowded = write_mrc(tmp_path / "crowded.mrc", mics[1].noisy, 2.0)
    broken = tmp_path / "broken.mrc"
    broken.write_bytes(b"not an mrc")
    truth = {"good": mics[0].clean, "crowded": np.random.default_rng(0).normal(size=mics[1].clean.shape)}

    def enhance(raw):  # an oracle "denoiser": the truth, or pure structure for the crowded one
        return truth["good"] if raw.shape and np.array_equal(raw, mics[0].noisy) else truth["crowded"]

    settings = ExtractionSettings(patch=PATCH, step=PATCH // 2, smooth=0.0, rule="ssim")
    report = extract_noise([good, crowded, broken], enhance, tmp_path / "out", settings, progress=False)
    assert report.counts["good"] > 0 and report.counts["crowded"] == 0
    assert report.without_background == ["crowded"] and "broken" in report.failed
    stack, _ = read_mrc(tmp_path / "out" / "noise_patches.mrcs", allow_stack=True)
    assert stack.shape == (report.total, PATCH, PATCH)
    assert abs(stack.mean()) < 0.5  # z-scored with the micrograph's statistics
    assert len(read_star(tmp_path / "out" / "noise_patches.star")["rlnCoordinateX"]) == report.total
    assert (tmp_path / "out" / "overlays" / "good.png").stat().st_size > 1000
    with pytest.raises(InputError, match="lower --threshold.*smaller --patch"):
        extract_noise([crowded], enhance, tmp_path / "out2", settings, min_patches=1, progress=False)
    assert not (tmp_path / "out2" / "noise_patches.mrcs").exists()


def _colored_noise(n, size, rng):
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
    filt = np.sqrt(np.exp(-(f**2) / (2 * 0.12**2)) + 0.2)
    out = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) * filt))
    return (out / out.std()).astype(np.float32), f


def _radial_spectrum(x, f):
    p = (np.abs(np.fft.fft2(x - x.mean((1, 2), keepdims=True))) ** 2).mean(0)
    ring = np.rint(f * x.shape[-1]).astype(int)
    return np.bincount(ring.ravel(), p.ravel()) / np.bincount(ring.ravel())


def test_gan_learns_a_known_colored_noise_process(tmp_path):
    """Measured when written (200 iterations, about 70 s): KS 0.026, band ratios 0.6-1.2."""
    real, f = _colored_noise(400, 64, np.random.default_rng(0))
    cfg = GANConfig(
        iterations=200, batch_size=32, crop=64, latent=32, width=8, lr=2e-4, log_every=50, checkpoint_every=100
    )
    path = train_noise_gan(real, tmp_path / "gan.pt", cfg, progress=False)
    generator, meta = load_model(path, kind="noise-gan")
    assert meta["crop"] == 64 and meta["patches"] == 400
    fake = generator.sample(200, 64, seed=5)[:, 0].numpy()
    ratio = _radial_spectrum(fake, f)[1:33] / _radial_spectrum(real[:200], f)[1:33]
    assert np.mean(np.abs(np.log(ratio))) < 0.3 and ratio.min() > 0.4 and ratio.max() < 2.5
    assert ks_2samp(real[:200].ravel(), fake.ravel()).statistic < 0.06
    assert fake.std() == pytest.approx(real.std(), rel=0.15)
    # not copies: generated patches do not correlate with any training patch
    a = (fake - fake.mean((1, 2), keepdims=True)).reshape(200, -1)
    b = (real - real.mean((1, 2), keepdims=True)).reshape(400, -1)
    corr = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    assert np.abs(corr).max() < 0.5
    big = generator.sample(2, 160, seed=1)  # fully convolutional: any size
    assert big.shape == (2, 1, 160, 160)
    assert (tmp_path / "gan.pt.samples.png").stat().st_size > 1000 and (tmp_path / "gan.pt.loss.csv").exists()


def test_gan_training_continued_from_its_checkpoint_equals_the_uninterrupted_run(tmp_path):
    """The GAN trains in the one training loop: a run of 3 iterations continued to 6 from its
    checkpoint (generator, critic and both Adams) ends with the weights and log of a run of 6."""
    real, _ = _colored_noise(16, 32, np.random.default_rng(0))
    cfg = {"batch_size": 4, "crop": 32, "latent": 8, "width": 8, "n_critic": 2, "log_every": 1, "checkpoint_every": 1}
    whole = train_noise_gan(real, tmp_path / "a" / "g.pt", GANConfig(iterations=6, **cfg), progress=False)
    train_noise_gan(real, tmp_path / "b" / "g.pt", GANConfig(iterations=3, **cfg), progress=False)
    again = train_noise_gan(real, tmp_path / "b" / "g.pt", GANConfig(iterations=6, **cfg), resume=True, progress=False)
    a, b = load_model(whole)[0].state_dict(), load_model(again)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [(tmp_path / d / "g.pt.loss.csv").read_text() for d in "ab"]
    assert rows[0] == rows[1] and rows[0].startswith("iteration,wasserstein,gradient_penalty,generator_loss")
    with pytest.raises(InputError, match="other settings"):
        train_noise_gan(
            real,
            tmp_path / "b" / "g.pt",
            GANConfig(iterations=8, **{**cfg, "n_critic": 3}),
            resume=True,
            progress=False,
        )


def test_least_squares_recovers_eq4_coefficients():
    rng = np.random.default_rng(1)
    s = torch.from_numpy(rng.normal(size=(5, 64, 64)))
    v = torch.from_numpy(rng.normal(size=(5, 64, 64)))
    truth = torch.tensor(
        [[0.8, 1.5, -2.0], [1.2, 0.3, 4.0], [2.0, 2.0, 0.0], [0.5, 0.9, 1.0], [1.0, 0.1, -1.0]], dtype=torch.float64
    )
    x = truth[:, 0, None, None] * s + truth[:, 1, None, None] * v + truth[:, 2, None, None]
    x = x + 0.01 * torch.from_numpy(rng.normal(size=x.shape))
    assert torch.allclose(fit_coefficients(s, v, x), truth, atol=0.01)


def test_reweighting_keeps_contrast_and_noise_level_but_swaps_the_noise():
    rng = np.random.default_rng(2)
    s = torch.from_numpy(rng.normal(size=(4, 64, 64)).astype(np.float32))
    own_noise = torch.from_numpy(rng.normal(0, 2.0, size=(4, 64, 64)).astype(np.float32))
    x = 0.7 * s + own_noise + 3.0
    v = torch.from_numpy(rng.normal(0, 5.0, size=(4, 64, 64)).astype(np.float32))  # independent "real" noise
    # the paper's plain least squares gives the independent noise almost no weight
    assert fit_coefficients(s, v, x)[:, 1].abs().max() < 0.05
    noisy, target, coeffs = reweight(s, v, x, level="simulated")
    assert torch.allclose(coeffs["alpha"], torch.full((4,), 0.7, dtype=torch.float64), atol=0.05)
    assert torch.allclose(target, 0.7 * s + 3.0, atol=0.2)
    assert float((noisy - target).var()) == pytest.approx(4.0, rel=0.1)  # X's noise variance kept
    real, real_target, real_coeffs = reweight(s, v, x, level="real")
    assert torch.equal(real_target, target) and torch.all(real_coeffs["beta"] == 1)
    assert float((real - real_target).var()) == pytest.approx(25.0, rel=0.1)  # the real noise's own level
    residual = (noisy - target).flatten()
    assert abs(float(np.corrcoef(residual, (v - v.mean((1, 2), keepdim=True)).flatten())[0, 1])) > 0.999


def test_full_disk_during_a_write_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "out.mrc"
    with pytest.raises(InputError, match="could not be written") as err:
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(target) in str(err.value) and "No space left" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_permissions_of_a_plain_new_file_not_of_a_temporary_one(tmp_path):
    """A facility's group must be able to read denoised micrographs and models (mkstemp's
    temporary files are private, 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    written = write_mrc(tmp_path / "mic.mrc", np.zeros((8, 8), np.float32), 1.0)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~mask


@pytest.fixture(scope="module")
def dense_field():
    """Crowded 20S proteasome micrographs (2 Å/px, 45 particles in 448²): no empty 160-px tile."""
    cfg = SimulationConfig(
        Acquisition(pixel_size=2.0, dose=40.0), size=(448, 448), particles=45, defocus_um=(1.5, 2.5), seed=11
    )
    structure = load_structure(PROTEASOME)
    sim = MicrographSimulator([structure], cfg)
    return [sim.simulate(i) for i in range(3)], structure.radius / 2.0


def _clearance(origins, patch, particles) -> float:
    """Smallest distance [px] from any particle centre to any patch."""
    xy = np.array([[p["x"], p["y"]] for p in particles])
    best = np.inf
    for y, x in origins:
        dx = np.maximum(np.maximum(x - xy[:, 0], xy[:, 0] - (x + patch)), 0)
        dy = np.maximum(np.maximum(y - xy[:, 1], xy[:, 1] - (y + patch)), 0)
        best = min(best, float(np.hypot(dx, dy).min()))
    return best


def test_mask_rule_finds_clean_noise_where_the_ssim_rule_finds_none(dense_field):
    """On a dense field the paper's rule (two diameters, on a good denoiser's output) finds no tile;
    the mask rule on the shipped general model's output finds patches, all clear of every particle
    (measured when written: see the printed figures)."""
    from nt2c_core.general import general_model_path

    mics, radius = dense_field
    general = Denoiser.from_file(general_model_path())
    diameter_a = 2 * radius * 2.0
    ssim = ExtractionSettings(rule="ssim", particle_diameter=diameter_a)
    mask = ExtractionSettings(rule="mask", particle_diameter=diameter_a)
    found_ssim, found_mask, clearance, free = 0, 0, [], []
    for mic in mics:
        enhanced = general.denoise(mic.noisy)
        found_ssim += len(find_background(mic.noisy, enhanced, ssim, pixel_size=2.0).origins)
        found = find_background(mic.noisy, enhanced, mask, pixel_size=2.0, patch=32)
        found_mask += len(found.origins)
        free.append(found.free_fraction)
        if len(found.origins):
            clearance.append(_clearance(found.origins, 32, mic.particles))
    print(
        f"dense field: SSIM {found_ssim}, mask {found_mask} patches, free {np.round(free, 3)}, "
        f"clearance {np.round(clearance, 1)} px (radius {radius:.1f} px)"
    )
    assert found_ssim == 0
    assert found_mask >= 6 and min(clearance) > 0.8 * radius


def test_mask_rule_chooses_the_patch_size_and_reports_free_area(tmp_path, dense_field):
    mics, radius = dense_field
    paths = [write_mrc(tmp_path / "raw" / f"m{i}.mrc", m.noisy, 2.0) for i, m in enumerate(mics)]
    truth = {p.name: m.clean for p, m in zip(paths, mics)}
    clean_of = {float(m.noisy[0, 0]) + float(m.noisy[5, 7]): m.clean for m in mics}

    def oracle(raw):  # the noiseless image as the "denoiser"
        return clean_of[float(raw[0, 0]) + float(raw[5, 7])]

    settings = ExtractionSettings(particle_diameter=4 * radius, target_patches=10)
    report = extract_noise(paths, oracle, tmp_path / "out", settings, min_patches=1, progress=False)
    assert report.patch % 32 == 0 and report.patch >= 32
    assert set(report.free_fraction) == {p.stem for p in paths} and all(
        0 < f < 1 for f in report.free_fraction.values()
    )
    stack, _ = read_mrc(tmp_path / "out" / "noise_patches.mrcs", allow_stack=True)
    assert stack.shape == (report.total, report.patch, report.patch)
    assert report.band_power_ratio is not None and report.band_power_ratio < 1.0  # less particle power
    assert len(truth) == 3
    with pytest.raises(InputError, match="free area"):  # advice names what to relax, with the measured area
        extract_noise(
            paths,
            oracle,
            tmp_path / "out2",
            ExtractionSettings(particle_diameter=4 * radius, patch=320),
            min_patches=1000,
            progress=False,
        )


def test_mask_rule_still_finds_clean_noise_with_a_30_percent_ice_gradient(tmp_path):
    """The paper's named limit (uneven backgrounds), measured: +-30 % ice thickness across each
    micrograph. Measured when written: 150 patches of 32 px in 3 micrographs (87 without the
    gradient; the thin side frees more area), all clear of every particle."""
    from nt2c_core.general import general_model_path
    from nt2c_core.io import list_mrcs
    from nt2c_core.simulate.experimental import ExperimentalNoise, make_experimental_dataset

    cfg = SimulationConfig(
        Acquisition(pixel_size=2.0, dose=40.0, detector="K3"),
        size=(512, 512),
        particles=10,
        defocus_um=(1.0, 3.0),
        count=3,
        seed=7,
    )
    out = make_experimental_dataset(
        [PROTEASOME], cfg, tmp_path / "exp", ExperimentalNoise(ice_gradient=0.3), progress=False
    )
    general = Denoiser.from_file(general_model_path())
    radius = load_structure(PROTEASOME).radius / 2.0
    settings = ExtractionSettings(particle_diameter=4 * radius)
    total = 0
    for path in list_mrcs(out / "raw"):
        raw, pixel = read_mrc(path)
        found = find_background(raw, general.denoise(raw), settings, path.stem, pixel, patch=32)
        coords = read_star(out / "coords" / f"{path.stem}.star")
        particles = [{"x": x, "y": y} for x, y in zip(coords["rlnCoordinateX"], coords["rlnCoordinateY"])]
        total += len(found.origins)
        if len(found.origins):
            assert _clearance(found.origins, 32, particles) > 0.8 * radius
    assert total >= 30


def test_patch_mosaic_tiles_real_patches_seeded_flipped_never_rotated():
    """The 'patches' noise model: every p x p block of a field is one real patch (mean removed),
    possibly flipped, at a random offset; the same seed gives the same fields."""
    from nt2c_core.noise.real_patches import PatchMosaic

    rng = np.random.default_rng(3)
    patches = rng.normal(2.0, 1.0, size=(6, 16, 16)).astype(np.float32)
    mosaic = PatchMosaic(patches)
    fields = mosaic.sample(3, (40, 56), seed=7)
    assert fields.shape == (3, 1, 40, 56)
    assert torch.equal(fields, mosaic.sample(3, (40, 56), seed=7))
    assert not torch.equal(fields, mosaic.sample(3, (40, 56), seed=8))
    assert abs(float(fields.mean())) < 0.05 and float(fields.std()) == pytest.approx(1.0, rel=0.1)
    # a 16 px window that lies inside one block is a flip of a centred real patch
    centred = patches - patches.mean((1, 2), keepdims=True)
    variants = [np.flip(c, axes) for c in centred for axes in ((), (0,), (1,), (0, 1))]
    field = fields[0, 0].numpy()
    found = 0
    for y in range(0, 25):
        for x in range(0, 41):
            window = field[y : y + 16, x : x + 16]
            found += any(np.array_equal(window, v) for v in variants)
    assert found >= 2  # whole blocks are in the field (about (40/16)*(56/16) of them)
    rotated = [np.rot90(c) for c in centred]
    assert not any(
        np.array_equal(field[y : y + 16, x : x + 16], r) for r in rotated for y in range(25) for x in range(41)
    )
    with pytest.raises(InputError, match="at least 2 square patches"):
        PatchMosaic(patches[:1])


def test_fine_training_from_real_patches_on_the_cli(tmp_path):
    """'nt2c train-fine --noise-patches' trains without a GAN; --noise-model and --noise-patches
    exclude each other."""
    from nt2c_core.cli import main

    pairs = tmp_path / "pairs"
    sim = SimulationConfig(Acquisition(pixel_size=2.5), size=(96, 96), particles=2, count=4, library_size=3, seed=2)
    from nt2c_core.simulate import simulate_dataset

    simulate_dataset([PROTEASOME], sim, pairs, progress=False)
    stack = write_mrc(
        tmp_path / "noise_patches.mrcs", np.random.default_rng(0).normal(size=(8, 32, 32)).astype(np.float32), 2.5
    )
    tiny = [
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--crop",
        "64",
        "--width",
        "8",
        "--val-every",
        "2",
        "--checkpoint-every",
        "2",
    ]
    assert main(["train", "--pairs", str(pairs), "-o", str(tmp_path / "coarse.pt"), *tiny]) == 0
    assert (
        main(
            [
                "train-fine",
                "--pairs",
                str(pairs),
                "--coarse",
                str(tmp_path / "coarse.pt"),
                "--noise-patches",
                str(stack),
                "-o",
                str(tmp_path / "fine.pt"),
                *tiny,
            ]
        )
        == 0
    )
    _, meta = load_model(tmp_path / "fine.pt", kind="denoiser")
    assert meta["noise_model"] == "patches" and meta["noise_source"] == str(stack) and meta["stage"] == "fine"
    assert meta["acquisition"]["pixel_size"] == 2.5  # from the pairs folder's params.json
    with pytest.raises(SystemExit):
        main(
            [
                "train-fine",
                "--pairs",
                str(pairs),
                "--coarse",
                str(tmp_path / "coarse.pt"),
                "--noise-patches",
                str(stack),
                "--noise-model",
                "x.pt",
                "-o",
                str(tmp_path / "f2.pt"),
            ]
        )


@pytest.mark.parametrize("shape, sigma", [((300, 250), 100.0), ((150, 170), 200.0), ((97, 33), 9.5), ((64, 80), 12.0)])
def test_fft_gaussian_lowpass_equals_scipy_reflect_filter(shape, sigma):
    """Flattening by the patch size (sigma in the hundreds of px) uses the FFT form; it must be
    scipy's gaussian_filter (mode 'reflect', truncate 4), kernels longer than the image included."""
    from scipy.ndimage import gaussian_filter

    from nt2c_core.noise.extract import gaussian_lowpass

    rng = np.random.default_rng(3)
    image = (rng.normal(size=shape) + np.linspace(0, 5, shape[1])[None]).astype(np.float32)
    fast = gaussian_lowpass(image, sigma)
    assert fast.dtype == np.float32 and fast.shape == image.shape
    np.testing.assert_allclose(fast, gaussian_filter(image, sigma), rtol=0, atol=1e-5 * np.abs(image).max())
