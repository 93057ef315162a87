"""Each metric against a case computable by hand."""

import math

import numpy as np
import pytest

from nt2c_core.metrics import band_psnr, fit_scale_offset, frc, psnr, regions_from_coordinates, snr_eq5, ssim


def _truth(n=128, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    return np.sin(xx / 7.0) + np.cos(yy / 5.0) + 0.1 * rng.normal(size=(n, n))


def test_psnr_of_known_gaussian_noise():
    truth = _truth()
    sigma = 0.2
    noisy = truth + np.random.default_rng(1).normal(0, sigma, truth.shape)
    peak = truth.max() - truth.min()
    expected = 10 * math.log10(peak**2 / sigma**2)
    assert psnr(noisy, truth, fit=False) == pytest.approx(expected, abs=0.1)


def test_scale_and_offset_do_not_change_fitted_psnr_or_ssim():
    truth = _truth()
    noisy = truth + np.random.default_rng(2).normal(0, 0.3, truth.shape)
    a, b = fit_scale_offset(3.0 * truth - 7.0, truth)
    assert (a, b) == pytest.approx((1 / 3, 7 / 3))
    assert psnr(5.0 * noisy + 11.0, truth) == pytest.approx(psnr(noisy, truth), abs=1e-9)
    assert ssim(-0.5 * noisy + 2.0, truth) == pytest.approx(ssim(noisy, truth), abs=1e-9)  # fit undoes sign
    assert psnr(2.0 * truth + 1.0, truth) > 200  # exact up to rounding


def test_frc_of_identical_and_of_independent_images():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(128, 128))
    same = frc(a, a, pixel_size=2.0)
    assert np.allclose(same.correlation, 1.0)
    assert same.frequency[-1] == pytest.approx(0.25)  # Nyquist of 2 Å pixels
    assert same.resolution(0.143) == pytest.approx(4.0)
    indep = frc(a, rng.normal(size=(128, 128)))
    # ring k holds about 2 pi k pixels: the correlation of noise scatters as 1/sqrt(that)
    npix = 2 * np.pi * np.arange(1, len(indep.correlation) + 1)
    assert np.mean(np.abs(indep.correlation[5:]) * np.sqrt(npix[5:])) < 1.2
    assert indep.resolution(0.5) == math.inf


def test_frc_resolution_of_a_low_passed_copy():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(256, 256))
    f = np.fft.fftfreq(256)
    mask = np.hypot(*np.meshgrid(f, f)) < 0.2
    b = np.real(np.fft.ifft2(np.fft.fft2(a) * mask)) + 0.01 * rng.normal(size=a.shape)
    assert frc(a, b, 1.0).resolution(0.5) == pytest.approx(1 / 0.2, rel=0.05)


def test_eq5_snr_on_regions_with_known_variance():
    rng = np.random.default_rng(5)
    image = rng.normal(10.0, 1.0, (400, 400))  # background variance 1
    pairs = []
    for i, x in enumerate((60, 160, 260)):
        image[40:80, x - 20 : x + 20] = rng.normal(50.0, 3.0, (40, 40))  # signal variance 9
        pairs.append(((x, 60, 40), (x, 300, 40)))
    assert snr_eq5(image, pairs) == pytest.approx(10 * math.log10(9.0), abs=0.3)


def test_background_regions_keep_clear_of_particles_and_stay_close():
    coords = np.array([[100.0, 100.0], [300.0, 120.0]])
    pairs = regions_from_coordinates((400, 400), coords, box=40, radius=30)
    assert len(pairs) == 2
    for (sx, sy, size), (bx, by, _) in pairs:
        assert size == 40
        dist = np.hypot(coords[:, 0] - bx, coords[:, 1] - by)
        assert dist.min() > 30 + 20 * math.sqrt(2) - 1e-9
        assert math.hypot(bx - sx, by - sy) < 100


def test_band_psnr_ignores_a_slow_ramp_that_the_full_psnr_counts():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    truth = -((xx - 40) ** 2 + (yy - 60) ** 2 < 100).astype(float) - ((xx - 90) ** 2 + (yy - 80) ** 2 < 100)
    pred = truth + rng.normal(0, 0.1, truth.shape)
    ramped = pred + 0.5 * xx / 128  # an intensity ramp across the field, wider than any particle
    assert psnr(ramped, truth) < psnr(pred, truth) - 3
    assert band_psnr(ramped, truth, 10) == pytest.approx(band_psnr(pred, truth, 10), abs=0.3)
    assert band_psnr(truth + rng.normal(0, 0.3, truth.shape), truth, 10) < band_psnr(pred, truth, 10) - 3
