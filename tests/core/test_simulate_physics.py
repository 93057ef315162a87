"""The simulator's physics, pinned against theory (units: Å, V, rad, electrons)."""

import math

import numpy as np
import pytest
import torch

from nt2c_core.data import APOFERRITIN
from nt2c_core.simulate import Acquisition, MicrographSimulator, SimulationConfig, load_structure
from nt2c_core.simulate.detector import DETECTORS, ICE_REFERENCE, apply_detector, ice_phase_ft
from nt2c_core.simulate.geometry import euler_to_matrix, matrix_to_euler, place_particles, random_rotations
from nt2c_core.simulate.optics import ctf, ctf_at, interaction_constant, wavelength
from nt2c_core.simulate.potential import (
    POTENTIAL_CONSTANT,
    Projector,
    atom_projected_potential,
    form_factor_coefficients,
)
from nt2c_core.simulate.structure import Structure


def test_wavelength_at_200_and_300_kv():
    assert wavelength(300e3) == pytest.approx(0.019687, abs=2e-6)
    assert wavelength(200e3) == pytest.approx(0.025079, abs=2e-6)


def test_interaction_constant_at_200_and_300_kv():
    assert interaction_constant(300e3) == pytest.approx(6.526e-4, rel=1e-3)
    assert interaction_constant(200e3) == pytest.approx(7.288e-4, rel=2e-3)  # Kirkland (2010)


def test_integrated_projected_potential_of_one_atom_equals_form_factor_sum():
    a, _ = form_factor_coefficients("C")
    expected = POTENTIAL_CONSTANT * sum(a)
    rho = np.linspace(0, 30, 300001)
    integral = np.trapz(2 * np.pi * rho * atom_projected_potential("C", rho, 20.0), rho)
    assert integral == pytest.approx(expected, rel=1e-4)
    atom = Structure("C1", "", {"C": np.zeros((1, 3), np.float32)}, explicit_hydrogens=True)
    box = Projector(atom, 64, 0.8, b_factor=20.0, solvent=False).project(np.eye(3))
    assert float(box.sum()) * 0.8**2 == pytest.approx(expected, rel=1e-4)


def test_projector_matches_direct_sum_of_gaussian_atoms():
    rng = np.random.default_rng(3)
    coords = {el: rng.normal(0, 6, (40, 3)).astype(np.float32) for el in ("C", "N", "O")}
    mol = Structure("toy", "", coords, explicit_hydrogens=True)
    pixel, b_factor, box, shift = 0.7, 40.0, 96, (0.31, -0.42)
    rotation = random_rotations(1, rng)[0]
    got = Projector(mol, box, pixel, b_factor, solvent=False).project(rotation, shift).numpy()
    yy, xx = (np.mgrid[0:box, 0:box] - box // 2) * pixel
    ref = np.zeros((box, box))
    for el, xyz in coords.items():
        for x, y, _ in xyz @ rotation.T:
            rho = np.hypot(xx - x - shift[0] * pixel, yy - y - shift[1] * pixel)
            ref += atom_projected_potential(el, rho, b_factor)
    rms = np.sqrt(np.mean((got - ref) ** 2)) / np.sqrt(np.mean(ref**2))
    assert rms < 0.01


def test_ctf_zeros_where_theory_puts_them_with_astigmatism_and_phase_shift():
    acq = Acquisition(voltage_kv=300, cs_mm=2.7, amplitude_contrast=0.1, phase_shift_deg=30.0)
    df_u, df_v, angle = 21000.0, 17000.0, math.radians(25)
    lam, cs = acq.wavelength, acq.cs_mm * 1e7
    offset = math.radians(acq.phase_shift_deg) + math.asin(acq.amplitude_contrast)
    for azimuth, df in ((angle, df_u), (angle + math.pi / 2, df_v)):
        for n in (1, 2, 5, 9):
            # solve pi*lam*df*k^2 - pi/2*cs*lam^3*k^4 + offset = n*pi for k^2 (smaller root)
            qa, qb, qc = -0.5 * math.pi * cs * lam**3, math.pi * lam * df, offset - n * math.pi
            k2 = (-qb + math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
            k = math.sqrt(k2)
            kx = torch.tensor([k * math.cos(azimuth)], dtype=torch.float64)
            ky = torch.tensor([k * math.sin(azimuth)], dtype=torch.float64)
            value = ctf_at(kx, ky, acq, df_u, df_v, angle, envelope=False)
            assert abs(float(value)) < 1e-9
            near = ctf_at(kx * 1.02, ky * 1.02, acq, df_u, df_v, angle, envelope=False)
            assert abs(float(near)) > 1e-3
    # at k = 0 the transfer is -sin(phase shift + arcsin w)
    assert float(ctf((8, 8), acq, df_u)[0, 0]) == pytest.approx(-math.sin(offset), abs=1e-6)


def test_poisson_mean_and_variance_at_the_given_dose():
    acq = Acquisition(pixel_size=1.5, dose=30.0, detector="ideal")
    counts = apply_detector(torch.ones(512, 512), acq, np.random.default_rng(0)).numpy()
    expected = 30.0 * 1.5**2
    assert counts.mean() == pytest.approx(expected, rel=3e-3)
    assert counts.var() == pytest.approx(expected, rel=2e-2)
    assert np.allclose(counts, np.round(counts))  # whole electrons


@pytest.mark.parametrize("name", ["K2", "K3", "Falcon4"])
def test_counting_detector_keeps_the_mean_and_shapes_the_noise_spectrum(name):
    det = DETECTORS[name]
    acq = Acquisition(pixel_size=1.0, dose=40.0, detector=name)
    counts = apply_detector(torch.ones(512, 512), acq, np.random.default_rng(1)).numpy()
    assert counts.mean() == pytest.approx(40.0, rel=3e-3)
    power = np.abs(np.fft.fft2(counts - counts.mean())) ** 2 / counts.size
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.fftfreq(512)))
    low = power[(f > 0.02) & (f < 0.06)].mean()
    high = power[(f > 0.40) & (f < 0.45)].mean()
    expected = float(det.nnps(torch.tensor(0.425)) / det.nnps(torch.tensor(0.04)))
    assert high / low == pytest.approx(expected, rel=0.05)
    assert low == pytest.approx(40.0 / det.dqe0 * float(det.nnps(torch.tensor(0.04))), rel=0.05)


def test_image_filter_lowers_high_frequency_power_by_its_square_and_keeps_the_mean():
    acq = Acquisition(pixel_size=1.0, dose=40.0, detector="ideal", image_filter=6.0)
    counts = apply_detector(torch.ones(512, 512), acq, np.random.default_rng(2)).numpy()
    assert counts.mean() == pytest.approx(40.0, rel=3e-3)
    power = np.abs(np.fft.fft2(counts - counts.mean())) ** 2 / counts.size
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.fftfreq(512)))
    high = power[(f > 0.40) & (f < 0.45)].mean()
    assert high == pytest.approx(40.0 * math.exp(-2 * 6.0 * 0.425**2), rel=0.08)


@pytest.fixture(scope="module")
def apoferritin():
    return load_structure(APOFERRITIN)


def _simulator(structure, **kwargs):
    acq = Acquisition(
        pixel_size=kwargs.pop("pixel_size", 2.0), dose=kwargs.pop("dose", 40.0), detector=kwargs.pop("detector", "K3")
    )
    cfg = SimulationConfig(
        acquisition=acq, size=(192, 160), particles=kwargs.pop("particles", 4), defocus_um=(1.5, 1.5), **kwargs
    )
    return MicrographSimulator([structure], cfg)


def test_expected_noisy_image_equals_clean_over_many_noise_draws(apoferritin):
    sim = _simulator(apoferritin, ice_thickness=300.0)
    draws = [sim.simulate(0, noise_draw=k) for k in range(80)]
    clean = draws[0].clean
    assert all(np.array_equal(d.clean, clean) for d in draws)
    mean_noisy = np.mean([d.noisy for d in draws], axis=0)
    noise_std = float(np.std(draws[0].noisy - clean))
    residual = mean_noisy - clean
    assert abs(float(residual.mean())) < 3 * noise_std / math.sqrt(80 * clean.size) * 10
    assert float(residual.std()) == pytest.approx(noise_std / math.sqrt(80), rel=0.15)


def test_snr_grows_with_dose_and_is_proportional_to_it_without_ice(apoferritin):
    snrs = [
        _simulator(apoferritin, dose=d, ice_thickness=0.0, detector="ideal").simulate(0).pixel_snr()
        for d in (10, 20, 40, 80)
    ]
    assert snrs == sorted(snrs)
    assert snrs[-1] / snrs[0] == pytest.approx(8.0, rel=0.15)


def test_ice_texture_variance_is_calibrated_to_the_reference_ratio():
    shape, pixel = (512, 512), 1.0
    acq = Acquisition(pixel_size=pixel, dose=ICE_REFERENCE["dose"], detector="ideal")
    phase_ft = ice_phase_ft(shape, pixel, ICE_REFERENCE["thickness"], np.random.default_rng(5))
    contrast = torch.fft.irfft2(phase_ft * 2 * ctf(shape, acq, ICE_REFERENCE["defocus"]), s=shape)
    ratio = float(contrast.var()) * acq.dose * pixel**2
    assert ratio == pytest.approx(ICE_REFERENCE["ratio"], rel=0.1)


def test_same_seed_same_output_and_other_seed_other_output(apoferritin):
    a = _simulator(apoferritin, seed=11).simulate(2)
    b = _simulator(apoferritin, seed=11).simulate(2)
    c = _simulator(apoferritin, seed=12).simulate(2)
    assert np.array_equal(a.noisy, b.noisy) and np.array_equal(a.clean, b.clean)
    assert a.particles == b.particles
    assert not np.array_equal(a.noisy, c.noisy)


def test_library_mode_pastes_the_library_view_with_exact_subpixel_shift(apoferritin):
    sim = _simulator(apoferritin, library_size=3)
    rotations, _ = sim.libraries[0]
    shift = np.array([0.37, -0.21])
    pasted = sim._particle_box(0, 1, shift)
    direct = sim.projectors[0].project(rotations[1], tuple(shift))
    rms = float((pasted - direct).pow(2).mean().sqrt() / direct.pow(2).mean().sqrt())
    assert rms < 0.005  # both are approximations of the same band-limited image
    mic = sim.simulate(0)
    assert {round(p["rot"], 3) for p in mic.particles} <= {round(matrix_to_euler(r)[0], 3) for r in rotations}


def test_particle_centre_and_axes_follow_the_coordinate_convention():
    rng = np.random.default_rng(9)
    mol = Structure("c", "", {"C": rng.normal(0, 5, (60, 3)).astype(np.float32)}, explicit_hydrogens=True)
    mol.coords["C"] -= mol.coords["C"].mean(0)
    rotation = random_rotations(1, rng)[0]
    box = Projector(mol, 64, 1.0, 30.0, solvent=False).project(rotation, (2.5, -1.25)).numpy()
    yy, xx = np.mgrid[0:64, 0:64]
    cx, cy = (box * xx).sum() / box.sum(), (box * yy).sum() / box.sum()
    exp_xy = (mol.coords["C"] @ rotation.T)[:, :2].mean(0) + 32 + np.array([2.5, -1.25])
    assert (cx, cy) == pytest.approx(tuple(exp_xy), abs=0.02)


def test_orientations_are_uniform_and_relion_euler_round_trips():
    rng = np.random.default_rng(0)
    rots = random_rotations(20000, rng)
    assert np.allclose(np.einsum("nij,nkj->nik", rots, rots), np.eye(3), atol=1e-9)
    assert np.abs(rots.mean(0)).max() < 0.02  # E[R] = 0 on SO(3)
    # the projection direction (third row) is uniform on the sphere: cos(tilt) uniform in [-1, 1]
    assert np.histogram(rots[:, 2, 2], bins=10, range=(-1, 1))[0].std() / 2000 < 0.05
    for r in rots[:50]:
        assert np.allclose(euler_to_matrix(*matrix_to_euler(r)), r, atol=1e-9)


def test_particles_do_not_overlap_and_stay_inside():
    pts = place_particles(60, 400, 300, 40.0, 20.0, np.random.default_rng(2))
    d = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))
    assert len(pts) > 20
    assert d[np.triu_indices(len(pts), 1)].min() >= 40.0
    assert (pts[:, 0] >= 20).all() and (pts[:, 0] <= 380).all() and (pts[:, 1] >= 20).all() and (pts[:, 1] <= 280).all()


def test_fast_ctf_grid_matches_the_reference_ctf():
    from nt2c_core.simulate.optics import CTFGrid

    acq = Acquisition(pixel_size=0.8, amplitude_contrast=0.1, phase_shift_deg=20.0)
    shape = (256, 200)
    grid = CTFGrid(shape, acq, envelope_defocus=20000.0)
    fast = grid(22000.0, 18000.0, 0.7)
    ref = ctf(shape, acq, 22000.0, 18000.0, 0.7, envelope=False) * grid.envelope
    assert float((fast - ref).abs().max()) < 1e-4


def test_uneven_ice_scales_the_texture_with_the_thickness_and_attenuates_as_beer_lambert():
    from nt2c_core.simulate.micrograph import INELASTIC_MEAN_FREE_PATH, through_uneven_ice

    rng = np.random.default_rng(3)
    signal = torch.ones(64, 64)
    ice = torch.from_numpy(0.05 * rng.standard_normal((64, 64)).astype(np.float32))
    flat = through_uneven_ice(signal, ice, np.zeros((64, 64), np.float32), 400.0)
    assert torch.allclose(flat, signal + ice)  # no change of thickness, no change of the image
    dt = np.full((64, 64), 0.44, np.float32)  # 44 % thicker
    thick = through_uneven_ice(signal, ice, dt, 400.0)
    attenuation = math.exp(-0.44 * 400.0 / INELASTIC_MEAN_FREE_PATH)
    assert float(thick.mean()) == pytest.approx(attenuation * float(flat.mean()), rel=1e-4)
    assert float(thick.std()) / attenuation == pytest.approx(1.2 * float(flat.std()), rel=1e-3)  # var ~ thickness


def test_ice_gradient_keeps_the_specimen_and_the_clean_target_and_ramps_the_noisy_image(apoferritin):
    from scipy.ndimage import gaussian_filter

    from nt2c_core.simulate.micrograph import ICE_GRADIENT_SEED, INELASTIC_MEAN_FREE_PATH, thickness_ramp

    flat = _simulator(apoferritin, ice_thickness=1500.0, dose=400.0, seed=5).simulate(1)
    sim = _simulator(apoferritin, ice_thickness=1500.0, dose=400.0, seed=5, ice_gradient=0.6)
    uneven = sim.simulate(1)
    assert np.array_equal(uneven.clean, flat.clean) and uneven.particles == flat.particles  # flat target
    ramp_rng = np.random.default_rng([5, 1, ICE_GRADIENT_SEED])
    amplitude = ramp_rng.uniform(0.0, 0.6)
    dt = thickness_ramp(flat.clean.shape, amplitude, ramp_rng.uniform(0.0, 2 * math.pi))
    expected = np.exp(-dt * 1500.0 / INELASTIC_MEAN_FREE_PATH)
    ratio = gaussian_filter(uneven.noisy, 8) / gaussian_filter(flat.noisy, 8)
    assert np.corrcoef(ratio.ravel(), expected.ravel())[0, 1] > 0.95
    assert float(np.ptp(ratio)) == pytest.approx(float(np.ptp(expected)), rel=0.25)


def test_ice_gradient_out_of_range_is_refused():
    from nt2c_core.errors import InputError

    with pytest.raises(InputError, match="ice gradient"):
        SimulationConfig(ice_gradient=1.5).validate()


def test_experimental_truth_is_darker_where_the_ice_is_thicker_as_the_raw_image(tmp_path):
    """The demo's truth through uneven ice carries the raw image's Beer-Lambert ramp (image content,
    not noise) and nothing of its noise; without a gradient it stays flat."""
    from scipy.ndimage import gaussian_filter

    from nt2c_core.io import read_mrc
    from nt2c_core.simulate.experimental import ExperimentalNoise, make_experimental_dataset

    cfg = SimulationConfig(
        Acquisition(pixel_size=2.0, dose=400.0, detector="K3"),
        size=(192, 160),
        particles=2,
        defocus_um=(1.5, 1.5),
        ice_thickness=1500.0,
        count=1,
        seed=3,
    )
    images = {}
    for gradient in (0.0, 0.6):
        out = make_experimental_dataset(
            [APOFERRITIN], cfg, tmp_path / f"g{gradient}", ExperimentalNoise(ice_gradient=gradient), progress=False
        )
        images[gradient] = [read_mrc(out / kind / "exp_0000.mrc")[0].astype(np.float64) for kind in ("raw", "truth")]
    (flat_raw, flat_truth), (uneven_raw, uneven_truth) = images[0.0], images[0.6]
    ramp = gaussian_filter(uneven_raw, 12) / gaussian_filter(flat_raw, 12)  # the raw image's own ramp
    factor = uneven_truth / flat_truth  # same particles: the truth's change is the ramp alone
    assert np.corrcoef(factor.ravel(), ramp.ravel())[0, 1] > 0.95
    assert float(np.ptp(factor)) == pytest.approx(float(np.ptp(ramp)), rel=0.2)
    assert float(np.ptp(factor)) > 0.2  # exp(+-0.6 x 1500 / 3500): 0.77 to 1.29
    raw_factor = uneven_raw / flat_raw  # the same noise draws: what differs is the ramp and the shot noise
    inner = (slice(8, -8), slice(8, -8))  # the FFT's periodic edges aside

    def roughness(a):
        return float((a - gaussian_filter(a, 4))[inner].std())

    assert roughness(factor) < 0.1 * roughness(raw_factor)  # smooth: none of the raw image's noise
    flat_low = gaussian_filter(flat_truth, 12)
    assert float(np.ptp(flat_low)) < 0.2 * float(np.ptp(gaussian_filter(uneven_truth, 12)))  # no ramp without one
