"""The DoG picker and pick scoring on images with known blob centres."""

import numpy as np
import pytest

from nt2c_core.evaluation.picking import pick_blobs, score_picks


def _blobs(rng, n=12, size=256, radius=8.0, noise=0.0):
    yy, xx = np.mgrid[0:size, 0:size]
    centres = []
    while len(centres) < n:
        c = rng.uniform(2 * radius, size - 2 * radius, 2)
        if all(np.hypot(*(c - d)) > 3 * radius for d in centres):
            centres.append(c)
    image = np.zeros((size, size))
    for x, y in centres:
        image -= np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (radius / 1.5) ** 2))
    return image + noise * rng.standard_normal(image.shape), np.array(centres)


def test_picker_finds_every_dark_blob_and_nothing_else_on_a_clean_image():
    image, truth = _blobs(np.random.default_rng(0))
    picks = pick_blobs(image, radius_px=8, threshold=4.0)
    score = score_picks(picks, truth, max_distance_px=3)
    assert score.recall == 1.0 and score.precision == 1.0 and score.f1 == 1.0
    pure_noise = np.random.default_rng(2).standard_normal(image.shape)
    assert len(pick_blobs(pure_noise, radius_px=8, threshold=4.0)) <= 1  # robust threshold: few picks on noise


def test_noise_lowers_f1_and_scoring_is_one_to_one():
    rng = np.random.default_rng(1)
    clean, truth = _blobs(rng)
    noisy = clean + 4.0 * rng.standard_normal(clean.shape)
    f1_noisy = score_picks(pick_blobs(noisy, 8), truth, 4).f1
    assert f1_noisy < score_picks(pick_blobs(clean, 8), truth, 4).f1
    doubled = np.concatenate([truth, truth + 0.5])  # two picks on one particle count once
    score = score_picks(doubled, truth, 4)
    assert score.recall == 1.0 and score.precision == 0.5
    assert score_picks(np.empty((0, 2)), truth, 4).f1 == 0.0


def test_particle_concentration_counts_known_particles_per_square_micron():
    from nt2c_core.evaluation.picking import particle_concentration

    rng = np.random.default_rng(3)
    images = [_blobs(rng, n=12, size=256, radius=8.0, noise=0.05)[0] for _ in range(3)]
    # 2 Å/px: each image sees (256 - 16)^2 px of 0.0002 µm = 0.002304 µm², 12 particles each
    measured = particle_concentration(images, radius_px=8, pixel_size=2.0)
    expected = 12 / ((256 - 16) ** 2 * 0.0002**2)
    assert measured == pytest.approx(expected, rel=0.1)
    assert particle_concentration([np.zeros((64, 64))], 8, 2.0) == 0.0
