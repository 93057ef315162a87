"""Model choice (nt2c_core.selection): the measures react to erasure, not to blur, and the rule
never hands over a model that departs from the raw data or erases an unknown structure."""

import shutil

import numpy as np
import pytest

from nt2c_core.data import APOFERRITIN, PROTEASOME
from nt2c_core.selection import (
    FILM_MICROGRAPHS,
    MixedMicrograph,
    ModelScore,
    choose_model,
    lowpass_agreement,
    masked_psnr,
    mixed_structure_pairs,
    residual_checks,
    score_table,
    with_real_noise,
)
from nt2c_core.simulate import Acquisition, SimulationConfig


def _field(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    clean = np.zeros((256, 256))
    centres = [(60, 60), (190, 80), (120, 180), (200, 200)]
    for x, y in centres:
        clean -= np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 12**2))
    return clean, clean + rng.normal(0, 0.5, clean.shape), centres, (xx, yy)


def test_lowpass_agreement_falls_when_a_particle_is_erased_not_when_blurred():
    from scipy.ndimage import gaussian_filter

    clean, raw, centres, (xx, yy) = _field()
    blurred = gaussian_filter(raw, 3)
    erased = clean.copy()
    x, y = centres[0]
    erased[(xx - x) ** 2 + (yy - y) ** 2 < 30**2] = 0  # a "denoiser" that removes one particle
    assert lowpass_agreement(raw, blurred, 12) > 0.98
    assert lowpass_agreement(raw, clean, 12) > lowpass_agreement(raw, erased, 12) + 0.05


def test_masked_psnr_sees_an_erased_particle():
    clean, raw, centres, (xx, yy) = _field()
    x, y = centres[0]
    mask = (xx - x) ** 2 + (yy - y) ** 2 < 15**2
    erased = clean.copy()
    erased[mask] = 0
    assert masked_psnr(clean, clean, mask) > 100 and masked_psnr(erased, clean, mask) < 10


def test_mixed_pairs_mark_the_unknown_structure(tmp_path):
    config = SimulationConfig(Acquisition(pixel_size=3.0), size=(256, 256), particles=6, seed=2)
    pairs = mixed_structure_pairs([str(APOFERRITIN)], config, count=2)
    plain, film = pairs[:2], pairs[2:]
    assert len(film) == FILM_MICROGRAPHS and all(
        m.any() and not m.all() and n.shape == c.shape == m.shape for n, c, m, _ in plain
    )
    assert all(p.edge is None for p in plain) and all(p.edge.any() and not p.edge.all() for p in film)
    assert mixed_structure_pairs([str(APOFERRITIN), str(PROTEASOME)], config) == []  # nothing left unseen
    copies = [tmp_path / "6z6u_copy.pdb.gz", tmp_path / "3j9i_T20S.pdb.gz"]  # the same molecules, renamed
    for source, copy in zip((APOFERRITIN, PROTEASOME), copies):
        shutil.copyfile(source, copy)
    assert mixed_structure_pairs([str(c) for c in copies], config) == []  # recognised by content, not by name
    fine = SimulationConfig(Acquisition(pixel_size=0.7), size=(256, 256), particles=6, seed=2)
    pairs = mixed_structure_pairs([str(APOFERRITIN)], fine, count=1)  # a proteasome is 210 px across here
    assert pairs and pairs[0][0].shape[0] > 256 and pairs[0][2].any()  # the field grew until one fitted


def test_mixed_micrographs_hold_an_aggregate_of_the_known_structure():
    """Part of the erasure check: particles of the data set's own structure pulled into one
    touching cluster (an aggregate); particles of the unknown structure stay apart from it."""
    from nt2c_core.selection import AGGREGATE
    from nt2c_core.simulate.micrograph import MicrographSimulator
    from nt2c_core.simulate.structure import load_structure

    config = SimulationConfig(
        Acquisition(pixel_size=3.0), size=(256, 256), particles=10, seed=2, count=1, library_size=0
    )
    sim = MicrographSimulator(
        [load_structure(APOFERRITIN), load_structure(PROTEASOME)], config, aggregate=AGGREGATE, aggregate_kinds=[0]
    )
    particles = sim.simulate(0).particles
    cluster = np.array([(p["x"], p["y"]) for p in particles if p.get("aggregate")])
    others = np.array([(p["x"], p["y"]) for p in particles if not p.get("aggregate")])
    r = sim.radius_px
    assert len(cluster) >= 3 and all(p["kind"] == 0 for p in particles if p.get("aggregate"))
    assert np.hypot(*(cluster[1:] - cluster[0]).T).max() < 1.6 * r  # touching, around the first
    assert min(np.hypot(*(others - c).T).min() for c in cluster) >= 2 * r  # nothing overlaps it


def test_mixing_a_shipped_structure_into_training_keeps_another_one_unseen():
    from nt2c_core.pipeline import PipelineConfig, training_structures

    ribosome = "/data/4v5d.cif.gz"
    assert training_structures(PipelineConfig(raw=[], structures=[ribosome])) == [ribosome]
    mixed = training_structures(PipelineConfig(raw=[], structures=[ribosome], mix_shipped=True))
    assert mixed == [ribosome, str(APOFERRITIN)]  # the proteasome stays unseen for the model choice
    assert training_structures(PipelineConfig(raw=[], structures=[str(APOFERRITIN)], mix_shipped=True)) == [
        str(APOFERRITIN),
        str(PROTEASOME),
    ]


@pytest.mark.parametrize(
    "coarse, chosen",
    [
        (ModelScore("coarse", 30.0, 0.95, {}, 20.0), "coarse"),  # better and keeps everything
        (ModelScore("coarse", 30.0, 0.90, {}, 20.0), "general"),  # departs from the raw data
        (ModelScore("coarse", 30.0, 0.95, {}, 18.0), "general"),  # erases the unknown structure
        (ModelScore("coarse", 30.0, 0.95, {}, 20.0, 0.0, 1.3), "general"),  # particle power left in its residual
        (ModelScore("coarse", 30.0, 0.95, {}, 20.0, 0.0, 1.05), "coarse"),  # removed about the noise only
        (ModelScore("coarse", 30.0, 0.95, {}, 20.0, 0.3, 0.2), "general"),  # removes less real noise than general
        (ModelScore("coarse", 28.05, 0.95, {}, 20.0), "general"),  # gains less than the margin on held-out pairs
    ],
)
def test_the_rule_never_picks_a_model_that_erases(coarse, chosen):
    general = ModelScore("general", 28.0, 0.95, {}, 20.0, 0.0, 0.45)  # a light filter leaves band noise
    name, reason = choose_model([general, coarse])
    assert name == chosen and name in reason


@pytest.mark.parametrize("edge, chosen", [(19.0, "coarse"), (18.0, "general"), (None, "general")])
def test_the_rule_never_picks_a_model_that_flattens_a_carbon_edge(edge, chosen):
    general = ModelScore("general", 28.0, 0.95, {}, 20.0, carbon_edge_psnr_db=19.2)
    coarse = ModelScore("coarse", 30.0, 0.95, {}, 20.0, carbon_edge_psnr_db=edge)
    name, reason = choose_model([general, coarse])
    assert name == chosen and "carbon" in reason


def test_residual_looks_like_noise_only_for_a_faithful_denoiser():
    """Truth as the output: residual = the noise (correlation about 0, band excess about 1).
    Half the contrast: the residual keeps particles (correlation > 0, band excess > 1). Twice the
    contrast: the output paints in more than the data hold (correlation < 0). One particle erased:
    band excess > 1."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    centres = [(60, 60), (190, 80), (120, 180), (200, 200), (60, 200)]
    clean = np.zeros((256, 256))
    for x, y in centres:  # discs with sharp edges: particle-band power, as real particles have
        clean -= (xx - x) ** 2 + (yy - y) ** 2 < 12**2
    raw = clean + rng.normal(0, 0.5, clean.shape)
    noise = np.random.default_rng(5).normal(0, 0.5, (200, 32, 32)).astype(np.float32)
    faithful = residual_checks(raw, clean, 12, noise)
    shrunk = residual_checks(raw, 0.5 * clean, 12, noise)
    painted = residual_checks(raw, 2.0 * clean, 12, noise)
    erased = clean.copy()
    for x, y in centres[:2]:
        erased[(xx - x) ** 2 + (yy - y) ** 2 < 30**2] = 0
    lost = residual_checks(raw, erased, 12, noise)
    assert abs(faithful[0]) < 0.15 and faithful[1] == pytest.approx(1.0, abs=0.25)
    assert shrunk[0] > 0.5 and painted[0] < -0.5 and painted[1] > faithful[1] + 0.2
    assert lost[1] > faithful[1] + 0.15 and shrunk[1] > faithful[1] + 0.1
    assert residual_checks(raw, clean, 12)[1] is None  # no patches, no band excess
    table = score_table([ModelScore("general", 28.0, 0.95, {}, 20.0, faithful[0], faithful[1])], "general")
    assert "residual band excess" in table and f"{faithful[1]:.2f}" in table


def test_a_carbon_rim_darkens_the_film_and_leaves_the_rest_of_the_micrograph():
    """The film's mean intensity is the zero-frequency limit of its image formation:
    exp(-t / mean free path) (1 - 2 w sigma V t); far inside the hole the micrograph is the one
    without a film, with the same particles. With ``carbon_fraction`` only some micrographs
    have a film."""
    import dataclasses
    import math

    from nt2c_core.simulate import interaction_constant
    from nt2c_core.simulate.carbon import CarbonFilm
    from nt2c_core.simulate.micrograph import MicrographSimulator
    from nt2c_core.simulate.structure import load_structure

    acq = Acquisition(pixel_size=3.0)
    config = SimulationConfig(acq, size=(256, 256), particles=6, seed=2, count=1, library_size=0)
    film = CarbonFilm()
    plain = MicrographSimulator([load_structure(APOFERRITIN)], config).simulate(0)
    rim = MicrographSimulator([load_structure(APOFERRITIN)], config, carbon=film).simulate(0)
    assert plain.edge is None and [p["x"] for p in rim.particles] == [p["x"] for p in plain.particles]
    distance = rim.edge.distance(256, 256)  # px, positive on the film
    assert 0.1 < (distance > 0).mean() < 0.45
    counts = acq.dose * acq.pixel_size**2
    expected = math.exp(-film.thickness / film.mean_free_path) * (
        1 - 2 * acq.amplitude_contrast * interaction_constant(acq.voltage) * film.mean_inner_potential * film.thickness
    )
    assert rim.clean[distance > 40].mean() / counts == pytest.approx(expected, abs=0.02)
    hole = distance < -40
    assert np.abs(rim.clean[hole] - plain.clean[hole]).mean() / counts < 0.01
    assert np.abs(rim.clean[hole] - plain.clean[hole]).max() / counts < 0.03
    some = dataclasses.replace(config, count=8, carbon_fraction=0.5)  # the training simulation's option
    edges = [MicrographSimulator([load_structure(APOFERRITIN)], some).simulate(i).edge for i in range(8)]
    assert 1 <= sum(e is not None for e in edges) <= 7


def test_carbon_edge_psnr_punishes_a_model_that_flattens_the_film():
    """The erasure check's carbon edge: a light filter keeps the film's step, a "denoiser" that
    removes everything larger than a particle (a flat background) loses it."""
    from scipy.ndimage import gaussian_filter

    from nt2c_core.selection import score_model

    config = SimulationConfig(Acquisition(pixel_size=3.0), size=(256, 256), particles=6, seed=2)
    mixed = mixed_structure_pairs([str(APOFERRITIN)], config, count=2)

    def flatten(x):
        return x - gaussian_filter(x, 30) + x.mean()

    light = score_model("light", lambda x: gaussian_filter(x, 1.5), None, [], 20, mixed)
    flat = score_model("flat", flatten, None, [], 20, mixed)
    assert light.carbon_edge_psnr_db > flat.carbon_edge_psnr_db + 2


def test_real_noise_replaces_the_simulated_noise_and_keeps_the_truth():
    """The held-out pairs and the erasure check in the data's noise: the clean image is the same
    truth (up to scale and offset), the noise is the real patches' (their level and texture: here
    stripes along x), and none of the simulated noise is left."""
    from nt2c_core.pairs import PairSet

    clean, noisy, _, _ = _field(3)
    rng = np.random.default_rng(8)
    stripes = np.repeat(rng.normal(0, 1.5, (40, 1, 32)), 32, axis=1).astype(np.float32)  # constant down each column
    held = PairSet([noisy.astype(np.float32)], [clean.astype(np.float32)], ["a"], 2.0)
    mixed = [MixedMicrograph(noisy, clean, clean < -0.5, None)]
    new_held, new_mixed = with_real_noise(held, mixed, stripes, seed=1)
    for x, y in ((new_held.noisy[0], new_held.clean[0]), (new_mixed[0].noisy, new_mixed[0].clean)):
        assert np.corrcoef(y.ravel(), clean.ravel())[0, 1] > 0.999
        noise = x - y
        assert noise.std() == pytest.approx(1.5, rel=0.15)
        assert np.abs(np.diff(noise, axis=0)).mean() < 0.05 * np.abs(np.diff(noise, axis=1)).mean()  # the stripes
        simulated = noisy - clean
        assert abs(np.corrcoef(noise.ravel(), simulated.ravel())[0, 1]) < 0.05
    assert new_mixed[0].mask is mixed[0].mask and new_held.names == ["a"]
    again, _ = with_real_noise(held, mixed, stripes, seed=1)
    assert np.array_equal(again.noisy[0], new_held.noisy[0])  # seeded


@pytest.mark.parametrize("fine_held_out, chosen", [(29.96, "fine"), (29.85, "coarse"), (30.2, "fine")])
def test_within_the_margin_the_model_closer_to_the_raw_data_is_chosen(fine_held_out, chosen):
    """Held-out differences under the margin say nothing about the real data: among the trained
    models within it of the best, the one agreeing best with the raw micrographs is chosen."""
    general = ModelScore("general", 28.0, 0.95, {}, 20.0)
    coarse = ModelScore("coarse", 30.0, 0.96, {}, 20.0)
    fine = ModelScore("fine", fine_held_out, 0.99, {}, 20.0)
    name, reason = choose_model([general, coarse, fine])
    assert name == chosen and reason.startswith(chosen)
    assert ("closer to the raw micrographs" in reason) == (fine_held_out < 30.0 and chosen == "fine")


def test_the_closer_model_must_still_beat_the_general_model_on_held_out_pairs():
    general = ModelScore("general", 28.0, 0.95, {}, 20.0)
    coarse = ModelScore("coarse", 28.15, 0.95, {}, 20.0)
    for fine_held_out, chosen in ((28.06, "fine"), (27.99, "coarse")):
        fine = ModelScore("fine", fine_held_out, 0.99, {}, 20.0)  # within 0.1 dB of coarse, closer to the raw data
        assert choose_model([general, coarse, fine])[0] == chosen
