"""The fine stage's data-consistency term on the real micrographs (nt2c_core.consistency)."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from nt2c_core.consistency import RealConsistency, gaussian_kernel, lowpass, particle_radius_px
from nt2c_core.data import APOFERRITIN, PROTEASOME
from nt2c_core.denoise import Denoiser
from nt2c_core.errors import InputError
from nt2c_core.io import read_mrc, write_mrc
from nt2c_core.models import load_model
from nt2c_core.pairs import provenance
from nt2c_core.selection import lowpass_agreement
from nt2c_core.simulate import Acquisition, SimulationConfig, simulate_dataset


def test_lowpass_is_scipys_mirror_gaussian():
    from scipy.ndimage import gaussian_filter

    image = np.random.default_rng(0).normal(size=(40, 52)).astype(np.float32)
    ours = lowpass(torch.from_numpy(image)[None, None], gaussian_kernel(2.0, 30))[0, 0].numpy()
    np.testing.assert_allclose(ours, gaussian_filter(image, 2.0, mode="mirror", truncate=3.5), atol=1e-5)


def _conv(weight: float) -> nn.Module:
    net = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(net.weight, weight)
    return net


def test_term_is_zero_for_the_identity_and_the_low_passed_power_for_an_eraser():
    """An output equal to the input costs nothing; an output of zeros costs weight x the mean
    square of the low-passed crops; a step's crops are always the same."""
    rng = np.random.default_rng(1)
    mics = [rng.normal(size=(96, 128)).astype(np.float32) + np.linspace(-2, 2, 128, dtype=np.float32) for _ in range(3)]
    term = RealConsistency(mics, radius_px=9.0, weight=2.0, batch=3, crop=64, seed=5)
    assert term.sigma == 3.0
    np.testing.assert_array_equal(term.crops(4), term.crops(4))
    assert not np.array_equal(term.crops(4), term.crops(5))
    with torch.no_grad():
        assert float(term(_conv(1.0), 4)) < 1e-10
        expected = 2.0 * float((lowpass(torch.from_numpy(term.crops(4)), term.kernel) ** 2).mean())
        assert float(term(_conv(0.0), 4)) == pytest.approx(expected, rel=1e-5) and expected > 0.1
    with pytest.raises(InputError, match="at least 64 px"):
        RealConsistency([mics[0][:50]], 9.0, 1.0, crop=64)


def test_band_between_the_raw_crop_and_the_reference_costs_nothing_and_outside_it_the_distance():
    """With a reference output (here half the micrograph): any output between the two at the
    particle scale costs nothing (the reference itself, the raw input, three quarters of it);
    outside the band the cost is weight x the mean square distance to its nearer side; without a
    reference the reference itself costs what it departs from the raw crop. A bad reference
    choice in the settings is refused by name."""
    from nt2c_core.settings import TrainConfig

    rng = np.random.default_rng(3)
    mics = [rng.normal(size=(96, 128)).astype(np.float32) + np.linspace(-2, 2, 128, dtype=np.float32) for _ in range(3)]
    banded = RealConsistency(mics, 9.0, 2.0, batch=3, crop=64, seed=5, references=[0.5 * m for m in mics])
    plain = RealConsistency(mics, 9.0, 2.0, batch=3, crop=64, seed=5)
    half_power = 2.0 * float((0.5 * lowpass(torch.from_numpy(banded.crops(7)), banded.kernel)).square().mean())
    with torch.no_grad():
        for inside in (1.0, 0.75, 0.5):
            assert float(banded(_conv(inside), 7)) < 1e-10, inside
        for outside in (0.0, 1.5):  # half a crop beyond either side
            assert float(banded(_conv(outside), 7)) == pytest.approx(half_power, rel=1e-5), outside
        assert float(plain(_conv(0.5), 7)) == pytest.approx(half_power, rel=1e-5) and half_power > 0.05
    with pytest.raises(InputError, match="one reference output of each micrograph"):
        RealConsistency(mics, 9.0, 1.0, crop=64, references=mics[:2])
    with pytest.raises(InputError, match="--consistency-reference = .raw.: choose one of general, none"):
        TrainConfig(consistency_reference="raw").validate()


@pytest.fixture(scope="module")
def erasing_setup(tmp_path_factory):
    """Pairs of one structure (proteasome) with strong noise, and 'real' micrographs holding
    another one (apoferritin): a fine model trained only on the pairs erases the other particles."""
    root = tmp_path_factory.mktemp("consistency")
    acq = Acquisition(pixel_size=3.0, dose=8.0)
    simulate_dataset(
        [PROTEASOME],
        SimulationConfig(acq, size=(128, 128), particles=3, count=6, library_size=4, seed=1),
        root / "pairs",
        progress=False,
    )
    simulate_dataset(
        [APOFERRITIN],
        SimulationConfig(acq, size=(160, 160), particles=4, count=3, library_size=4, seed=2),
        root / "other",
        progress=False,
    )
    stack = write_mrc(root / "noise.mrcs", np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32), 3.0)
    return root, stack, sorted((root / "other" / "noisy").glob("*.mrc"))


def test_consistency_keeps_the_fine_model_to_the_real_micrographs(erasing_setup):
    """Same pairs, noise, seed and steps: with the real micrographs the fine output agrees better
    with them at the particle scale than without (where it erases what is not its structure), the
    model records the term and the loss log its values."""
    from nt2c_core.cli import main

    root, stack, real = erasing_setup
    tiny = [
        "--steps",
        "80",
        "--batch-size",
        "4",
        "--crop",
        "64",
        "--width",
        "8",
        "--val-every",
        "40",
        "--checkpoint-every",
        "40",
        "--lr",
        "2e-3",
    ]
    assert main(["train", "--pairs", str(root / "pairs"), "-o", str(root / "coarse.pt"), *tiny]) == 0
    agreement = {}
    for name, extra in (
        ("off", ["--consistency", "0"]),
        ("on", ["--micrographs", *map(str, real), "--consistency", "3"]),
    ):
        out = root / f"fine_{name}.pt"
        assert (
            main(
                [
                    "train-fine",
                    "--pairs",
                    str(root / "pairs"),
                    "--coarse",
                    str(root / "coarse.pt"),
                    "--noise-patches",
                    str(stack),
                    "-o",
                    str(out),
                    *tiny,
                    *extra,
                ]
            )
            == 0
        )
        radius = particle_radius_px(provenance(root / "pairs"))
        den = Denoiser.from_file(out)
        agreement[name] = np.mean(
            [lowpass_agreement(read_mrc(p)[0], den.denoise(read_mrc(p)[0]), radius) for p in real]
        )
        meta = load_model(out, kind="denoiser")[1]
        if name == "on":
            assert meta["consistency"] == {
                "weight": 3.0,
                "sigma_px": round(radius / 3, 2),
                "micrographs": 3,
                "reference": "general",
            }
            assert "consistency" in (root / "fine_on.pt.loss.csv").read_text().splitlines()[0]
        else:
            assert meta["consistency"] is None
    assert agreement["on"] > agreement["off"] + 0.03, agreement  # measured 0.971 against 0.895


def test_fine_without_micrographs_warns_and_a_wrong_pixel_size_names_the_file(erasing_setup, caplog):
    from nt2c_core.cli import main
    from nt2c_core.settings import FINE, replace
    from nt2c_core.stages import train_fine

    root, stack, real = erasing_setup
    config = replace(FINE, steps=2, batch_size=2, crop=64, val_every=1, checkpoint_every=1)
    with caplog.at_level(logging.WARNING):
        train_fine(root / "pairs", root / "coarse.pt", stack, root / "fine_warn.pt", config, progress=False)
    assert "data-consistency term is off" in caplog.text
    wrong = write_mrc(root / "wrong.mrc", read_mrc(real[0])[0], 5.0)
    code = main(
        [
            "train-fine",
            "--pairs",
            str(root / "pairs"),
            "--coarse",
            str(root / "coarse.pt"),
            "--noise-patches",
            str(stack),
            "-o",
            str(root / "fine_bad.pt"),
            "--steps",
            "2",
            "--crop",
            "64",
            "--micrographs",
            str(wrong),
        ]
    )
    assert code == 2 and not (root / "fine_bad.pt").exists()


def test_crops_cover_the_low_pass_of_large_particles(tmp_path):
    """8 low-pass sigmas per crop side (a 20S proteasome at 0.67 Å/px: 384 px), at least the former
    128 px, at most 512 px and never more than the smallest real micrograph; fewer crops per step
    as they grow, so a step compares about as many pixels."""
    from nt2c_core.consistency import batch_for, crop_for

    assert crop_for(9.0) == 128 and crop_for(136.0) == 384 and crop_for(1000.0) == 512
    big = [
        write_mrc(tmp_path / f"m{i}.mrc", np.random.default_rng(i).normal(size=(300, 420)).astype(np.float32), 1.0)
        for i in range(2)
    ]
    term = RealConsistency.from_files(big, 1.0, radius_px=136.0, weight=1.0)
    assert term.crop == 288 and term.crops(0).shape == (1, 1, 288, 288)  # capped by the 300-px side
    assert len(term.kernel) < 288  # the Gaussian (sigma 45 px) is not cut by the crop
    small = RealConsistency.from_files(big, 1.0, radius_px=9.0, weight=1.0)
    assert small.crops(0).shape == (4, 1, 128, 128)  # four 128-px crops, as before
    assert RealConsistency.from_files(big, 1.0, radius_px=72.0, weight=1.0).crops(0).shape == (2, 1, 192, 192)
    assert RealConsistency.from_files(big, 1.0, radius_px=136.0, weight=1.0, batch=3).batch == 3  # as asked
    assert batch_for(64) == 4 and batch_for(512) == 1  # never more than 4
