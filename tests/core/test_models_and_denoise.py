"""U-Net shapes, model files, exact resume, seam-free tiling, and ``nt2c denoise`` on bad input."""

import json

import numpy as np
import pytest
import torch

from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN
from nt2c_core.denoise import Denoiser, TileSettings, bin_image
from nt2c_core.io import read_mrc, write_mrc
from nt2c_core.models import ModelFileError, UNet, load_model, save_model
from nt2c_core.pairs import load_pairs
from nt2c_core.simulate import Acquisition, SimulationConfig, simulate_dataset
from nt2c_core.training import TrainConfig, checkpoint_path, train_denoiser


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    cfg = SimulationConfig(Acquisition(pixel_size=2.5), size=(160, 128), particles=4, count=4, library_size=20, seed=3)
    simulate_dataset([APOFERRITIN], cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, pairs_dir):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    train_denoiser(
        load_pairs(pairs_dir),
        path,
        TrainConfig(steps=12, batch_size=2, crop=64, width=8, val_every=6, checkpoint_every=6),
        progress=False,
    )
    return path


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 37, 101), (1, 1, 250, 33), (1, 1, 5, 9)])
def test_unet_keeps_any_input_shape(shape):
    assert UNet(width=8)(torch.randn(shape)).shape == shape


def test_unet_has_five_poolings_and_the_papers_size():
    net = UNet()  # width 48: the authors' network, about 0.97 M parameters
    assert len(net.enc) == 5 and len(net.dec) == 4
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(0.97e6, rel=0.01)


def test_model_file_round_trip_keeps_weights_and_metadata(tmp_path):
    net = UNet(width=8)
    path = save_model(tmp_path / "m.pt", net, {"pixel_size": 1.1, "acquisition": {"voltage_kv": 300}})
    loaded, meta = load_model(path)
    assert meta["pixel_size"] == 1.1 and meta["architecture"]["width"] == 8 and meta["torch_version"]
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))
    payload = torch.load(path, weights_only=True)  # no pickled code inside
    assert json.loads(payload["metadata"])["nt2c_version"]


def test_files_that_are_not_our_models_are_refused_by_name(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    wrong = tmp_path / "wrong.pt"
    save_model(wrong, UNet(width=8), {})
    payload = torch.load(wrong, weights_only=True)
    payload["metadata"] = json.dumps(
        {**json.loads(payload["metadata"]), "architecture": {"name": "unet", "width": 16, "first_kernel": 11}}
    )
    torch.save(payload, wrong)
    for path, message in (
        (text, "not an NT2C model"),
        (other, "not an NT2C model"),
        (wrong, "do not fit the architecture"),
        (tmp_path / "missing.pt", "not found"),
    ):
        with pytest.raises(ModelFileError, match=message) as err:
            load_model(path)
        assert str(path) in str(err.value)


def test_resumed_training_equals_uninterrupted_training(tmp_path, pairs_dir):
    pairs = load_pairs(pairs_dir)
    cfg = dict(batch_size=2, crop=64, width=8, val_every=3, checkpoint_every=3, seed=7)
    full = train_denoiser(pairs, tmp_path / "full.pt", TrainConfig(steps=8, **cfg), progress=False)
    # a run stopped after 3 steps (its checkpoint), then resumed to the end
    stopped = tmp_path / "part.pt"
    halted = train_denoiser(pairs, stopped, TrainConfig(steps=8, **cfg), progress=False, stop_after=4)
    assert halted.model_path is None and not stopped.exists() and checkpoint_path(stopped).exists()
    resumed = train_denoiser(pairs, stopped, TrainConfig(steps=8, **cfg), resume=True, progress=False)
    a, b = load_model(full.model_path)[0].state_dict(), load_model(resumed.model_path)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in resumed.log] == [r["step"] for r in full.log] == [3, 6, 8]
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in full.log]
    assert (tmp_path / "part.pt.loss.csv").read_text().count("\n") == 4
    assert (tmp_path / "part.pt.loss.png").stat().st_size > 1000


def test_resume_with_other_settings_is_refused(tmp_path, pairs_dir):
    pairs = load_pairs(pairs_dir)
    path = tmp_path / "m.pt"
    train_denoiser(
        pairs, path, TrainConfig(steps=2, batch_size=2, crop=64, width=8, checkpoint_every=2), progress=False
    )
    with pytest.raises(Exception, match="other settings"):
        train_denoiser(
            pairs, path, TrainConfig(steps=4, batch_size=2, crop=64, width=8, lr=0.1), resume=True, progress=False
        )


def test_tiled_denoising_matches_one_pass(tiny_model):
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, (523, 700)).astype(np.float32)
    denoiser = Denoiser.from_file(tiny_model, tiles=TileSettings(tile=256, margin=64, batch=3))
    whole = denoiser.denoise(image, whole=True)
    tiled = denoiser.denoise(image)
    assert tiled.shape == image.shape
    assert np.abs(tiled - whole).max() < 2e-3 * whole.std()


def test_binning_averages_blocks():
    image = np.arange(36, dtype=np.float32).reshape(6, 6)
    assert np.array_equal(bin_image(image, 2), image.reshape(3, 2, 3, 2).mean((1, 3)))
    assert bin_image(image, 4).shape == (1, 1)


def test_denoise_cli_writes_same_names_skips_done_and_reports_bad_files(tmp_path, tiny_model, pairs_dir, capsys):
    good = sorted((pairs_dir / "noisy").glob("*.mrc"))[:2]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.mrc").write_bytes(good[0].read_bytes()[:3000])
    nan = np.ones((64, 64), np.float32)
    nan[3, 3] = np.nan
    write_mrc(bad / "nan.mrc", nan, 1.0)
    write_mrc(bad / "stack.mrc", np.ones((3, 64, 64), np.float32), 1.0)
    out = tmp_path / "out"
    inputs = [*good, bad / "truncated.mrc", bad / "nan.mrc", bad / "stack.mrc", bad / "missing.mrc"]
    code = main(["denoise", "--model", str(tiny_model), "-o", str(out), "--device", "cpu", *map(str, inputs)])
    text = capsys.readouterr().out
    assert code == 1
    assert "2 denoised, 0 already done, 4 failed" in text
    for name, why in (
        ("truncated", "truncated MRC file"),
        ("nan", "NaN"),
        ("stack", "single 2-D image"),
        ("missing", "not found"),
    ):
        assert any(name in line and why in line for line in text.splitlines())
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in good]
    den, pixel = read_mrc(out / good[0].name)
    assert pixel == pytest.approx(2.5) and den.shape == read_mrc(good[0])[0].shape and den.dtype == np.float32
    stamp = (out / good[0].name).stat().st_mtime_ns
    assert main(["denoise", "--model", str(tiny_model), "-o", str(out), *map(str, good)]) == 0
    assert "0 denoised, 2 already done" in capsys.readouterr().out  # same model, same binning: kept
    assert (out / good[0].name).stat().st_mtime_ns == stamp


def test_denoise_never_writes_over_its_input(tmp_path, tiny_model, pairs_dir, capsys):
    src = tmp_path / "mic.mrc"
    src.write_bytes((sorted((pairs_dir / "noisy").glob("*.mrc"))[0]).read_bytes())
    before = src.read_bytes()
    assert main(["denoise", "--model", str(tiny_model), "-o", str(tmp_path), "--overwrite", str(src)]) == 1
    assert "overwrite the input" in capsys.readouterr().out
    assert src.read_bytes() == before


def test_binned_output_has_the_binned_pixel_size(tmp_path, tiny_model, pairs_dir):
    src = sorted((pairs_dir / "noisy").glob("*.mrc"))[0]
    assert main(["denoise", "--model", str(tiny_model), "-o", str(tmp_path), "--bin", "2", str(src)]) == 0
    image, pixel = read_mrc(tmp_path / src.name)
    assert image.shape == (64, 80) and pixel == pytest.approx(5.0)


def test_model_not_ours_is_a_clear_cli_error(tmp_path, pairs_dir, capsys):
    fake = tmp_path / "fake.pt"
    fake.write_text("nope")
    src = sorted((pairs_dir / "noisy").glob("*.mrc"))[0]
    assert main(["denoise", "--model", str(fake), "-o", str(tmp_path / "o"), str(src)]) == 2
    assert f"{fake}: not an NT2C model" in capsys.readouterr().err


def test_train_cli_refuses_to_replace_a_model_without_resume_or_overwrite(tmp_path, pairs_dir, capsys):
    model = tmp_path / "m.pt"
    model.write_text("x")
    assert main(["train", "--pairs", str(pairs_dir), "-o", str(model), "--steps", "1"]) == 2
    assert "--resume" in capsys.readouterr().err and model.read_text() == "x"
