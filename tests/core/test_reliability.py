"""Bad input and faults (issue #16): every case ends in a clear message and exit 2 (or a per-file
failure that is reported), never a traceback, a NaN reported as success or a lost micrograph.
Every bad file is tiny and made here; the README's "Reliability" section lists these cases."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN
from nt2c_core.denoise import Denoiser, denoise_files
from nt2c_core.errors import InputError
from nt2c_core.io import read_mrc, write_mrc
from nt2c_core.models import ModelFileError, UNet, load_model, save_model
from nt2c_core.models.gan import NoiseGenerator
from nt2c_core.noise.extract import ExtractionSettings, find_background
from nt2c_core.noise.synthesize import GANConfig, train_noise_gan
from nt2c_core.pipeline import PipelineConfig
from nt2c_core.simulate import Acquisition, SimulationConfig, simulate_dataset


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``nt2c ARGV`` in-process: (exit code, stdout, stderr). A traceback fails the test."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    cfg = SimulationConfig(Acquisition(pixel_size=2.5), size=(128, 128), particles=3, count=4, library_size=12, seed=1)
    simulate_dataset([APOFERRITIN], cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("m") / "tiny.pt", UNet(width=8), {"kind": "denoiser", "pixel_size": 2.5})


@pytest.fixture(scope="module")
def gan_model(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("g") / "gan.pt", NoiseGenerator(8, 8), {"kind": "noise-gan"})


@pytest.fixture()
def mic(tmp_path):
    rng = np.random.default_rng(0)
    return write_mrc(tmp_path / "in" / "mic.mrc", rng.poisson(20, (96, 96)).astype(np.float32), 2.5)


# --- 1. NaN is never success ----------------------------------------------------------------


def test_negative_tile_margin_is_refused(capsys, tmp_path, mic, model):
    rc, _, err = cli(capsys, "denoise", "--model", model, "-o", tmp_path / "o", "--tile", 64, "--margin", -32, mic)
    assert rc == 2 and "margin" in err
    assert not (tmp_path / "o" / "mic.mrc").exists()


def test_model_with_nan_weights_is_refused_at_load(capsys, tmp_path, mic):
    net = UNet(width=8)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    bad = save_model(tmp_path / "nan.pt", net, {"kind": "denoiser"})
    with pytest.raises(ModelFileError, match="not finite"):
        load_model(bad)
    rc, _, err = cli(capsys, "denoise", "--model", bad, "-o", tmp_path / "o", mic)
    assert rc == 2 and "not finite" in err and not (tmp_path / "o" / "mic.mrc").exists()


def test_non_finite_output_is_a_failure_not_a_file(tmp_path, mic, model, monkeypatch):
    denoiser = Denoiser.from_file(model)
    monkeypatch.setattr(denoiser, "denoise", lambda image: np.full_like(image, np.nan))
    report = denoise_files(denoiser, [mic], tmp_path / "o", progress=False)
    assert not report.written and "not finite" in report.failed[str(mic)]
    assert not (tmp_path / "o" / "mic.mrc").exists()


def test_diverging_training_stops_with_clear_error_and_keeps_last_good_checkpoint(capsys, tmp_path, pairs):
    out = tmp_path / "m.pt"
    rc, _, err = cli(
        capsys,
        "train",
        "--pairs",
        pairs,
        "-o",
        out,
        "--crop",
        64,
        "--width",
        8,
        "--batch-size",
        2,
        "--checkpoint-every",
        1,
        "--val-every",
        1,
        "--device",
        "cpu",
        "--steps",
        40,
        "--lr",
        1e6,
    )
    assert rc == 2 and "diverged" in err and "--lr" in err
    assert not out.exists()  # no model with NaN weights
    ckpt = Path(f"{out}.ckpt")
    if ckpt.exists():  # the last checkpoint written is from before the divergence
        state = torch.load(ckpt, weights_only=True)["network"]
        assert all(torch.isfinite(v).all() for v in state.values())


def test_constant_micrograph_has_no_noise_patches():
    flat = np.full((256, 256), 7.0, np.float32)
    for settings in (ExtractionSettings(patch=64, rule="ssim"), ExtractionSettings(particle_diameter=50.0)):
        found = find_background(flat, flat, settings, pixel_size=2.0)
        assert len(found.origins) == 0, settings.rule


def test_noise_gan_refuses_zero_variance_patches_and_divergence(tmp_path):
    with pytest.raises(InputError, match="zero variance"):
        train_noise_gan(np.zeros((8, 64, 64), np.float32), tmp_path / "g.pt", GANConfig(iterations=2), progress=False)
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(8, 64, 64)).astype(np.float32)
    with pytest.raises(InputError, match="diverged"):
        train_noise_gan(
            patches,
            tmp_path / "g.pt",
            GANConfig(iterations=20, lr=1e12, batch_size=4, width=8, latent=8, n_critic=1),
            progress=False,
        )
    assert not (tmp_path / "g.pt").exists()


# --- 2. no lost micrograph ------------------------------------------------------------------


def test_two_inputs_with_one_output_name_are_refused(capsys, tmp_path, model):
    a = write_mrc(tmp_path / "a" / "mic.mrc", np.ones((64, 64), np.float32) + np.eye(64), 2.5)
    b = write_mrc(tmp_path / "b" / "mic.mrc", np.ones((64, 64), np.float32) + np.eye(64)[::-1], 2.5)
    c = write_mrc(tmp_path / "c" / "mic.mrcs", np.ones((64, 64), np.float32) + np.eye(64)[::-1], 2.5)
    for pair in ((a, b), (a, c)):
        rc, _, err = cli(capsys, "denoise", "--model", model, "-o", tmp_path / "o", *pair)
        assert rc == 2 and "same output name" in err and str(pair[1]) in err
        assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.mrc"))


def test_rerun_with_other_bin_or_model_redoes_the_output(capsys, tmp_path, mic, model):
    out = tmp_path / "o" / "mic.mrc"
    assert cli(capsys, "denoise", "--model", model, "-o", tmp_path / "o", mic)[0] == 0
    assert read_mrc(out)[0].shape == (96, 96)
    rc, text, _ = cli(capsys, "denoise", "--model", model, "-o", tmp_path / "o", mic)
    assert rc == 0 and "1 already done" in text
    rc, text, _ = cli(capsys, "denoise", "--model", model, "-o", tmp_path / "o", "--bin", 2, mic)
    assert rc == 0 and "1 denoised" in text and read_mrc(out)[0].shape == (48, 48)
    torch.manual_seed(1)
    other = save_model(tmp_path / "other.pt", UNet(width=8), {"kind": "denoiser"})
    before = read_mrc(out)[0]
    rc, text, _ = cli(capsys, "denoise", "--model", other, "-o", tmp_path / "o", "--bin", 2, mic)
    assert rc == 0 and "1 denoised" in text and not np.array_equal(read_mrc(out)[0], before)
    with mrcfile.open(out, header_only=True) as f:  # provenance in the MRC labels
        labels = " ".join(label.decode() for label in f.header.label[: f.header.nlabl])
    assert "bin=2" in labels and "sha256=" in labels


def test_read_only_output_found_before_any_work(capsys, tmp_path, mic, model):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, _, err = cli(capsys, "denoise", "--model", model, "-o", blocker, mic)
    assert rc == 2 and str(blocker) in err


# --- 3. crafted headers -----------------------------------------------------------------------


def _header_file(path: Path, nx=64, ny=64, nz=1, mode=2, next_=0, data_bytes=None) -> Path:
    with mrcfile.new(path, overwrite=True) as m:  # a small valid file, then its header is rewritten
        m.set_data(np.zeros((64, 64), np.float32))
    raw = bytearray(path.read_bytes())
    header = np.frombuffer(raw[:1024], dtype=mrcfile.dtypes.HEADER_DTYPE).copy()
    header["nx"], header["ny"], header["nz"], header["mode"], header["nsymbt"] = nx, ny, nz, mode, next_
    body = raw[1024:] if data_bytes is None else bytes(data_bytes)
    path.write_bytes(header.tobytes() + body)
    return path


@pytest.mark.parametrize(
    "case, match",
    [
        (dict(next_=2**31 - 1), "extended header"),
        (dict(nx=46340, ny=46340), "truncated"),
        (dict(mode=4), "complex"),
        (dict(nx=-5), "dimensions"),
    ],
)
def test_crafted_mrc_headers_fail_fast_without_big_allocations(tmp_path, case, match):
    path = _header_file(tmp_path / "bad.mrc", **case)
    tracemalloc.start()
    with pytest.raises(InputError, match=match):
        read_mrc(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6


def test_renamed_png_is_not_an_mrc(tmp_path):
    png = tmp_path / "image.mrc"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    tracemalloc.start()
    with pytest.raises(InputError, match="not an MRC"):
        read_mrc(png)
    assert tracemalloc.get_traced_memory()[1] < 50e6
    tracemalloc.stop()


def test_memory_error_fails_one_file_and_the_batch_goes_on(tmp_path, model, monkeypatch):
    files = [
        write_mrc(tmp_path / "in" / f"m{i}.mrc", np.random.default_rng(i).normal(size=(64, 64)), 2.5) for i in range(3)
    ]
    denoiser = Denoiser.from_file(model)
    real = denoiser.denoise

    def flaky(image):
        if image[0, 0] == read_mrc(files[1])[0][0, 0]:
            raise MemoryError()
        return real(image)

    monkeypatch.setattr(denoiser, "denoise", flaky)
    report = denoise_files(denoiser, files, tmp_path / "o", progress=False)
    assert len(report.written) == 2 and "memory" in report.failed[str(files[1])]


def test_zero_pixel_size_is_warned_about(capsys, tmp_path, model, caplog):
    src = write_mrc(tmp_path / "z.mrc", np.random.default_rng(0).normal(size=(64, 64)), 0.0)
    rc, out, err = cli(capsys, "denoise", "--model", model, "-o", tmp_path / "o", src)
    assert rc == 0 and "pixel size" in (out + err + caplog.text) and "header" in (out + err + caplog.text)


# --- 4. model files -------------------------------------------------------------------------


def test_a_noise_model_where_a_denoiser_belongs_is_refused(capsys, tmp_path, mic, gan_model, pairs):
    for argv in (
        ["denoise", "--model", gan_model, "-o", tmp_path / "o", mic],
        ["extract-noise", "--coarse", gan_model, "--particle-diameter", 100, "-o", tmp_path / "n", mic],
        ["train", "--pairs", pairs, "--init", gan_model, "-o", tmp_path / "f.pt", "--steps", 1, "--crop", 64],
    ):
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and "noise-gan" in err and "denoiser" in err, argv


def _tampered(path: Path, model: Path, **changes) -> Path:
    payload = torch.load(model, weights_only=True)
    meta = json.loads(payload["metadata"])
    for key, value in changes.items():
        if key == "metadata":
            payload["metadata"] = value
        elif key == "architecture":
            meta["architecture"] = value
            payload["metadata"] = json.dumps(meta)
        elif key == "drop":
            payload.pop(value)
        else:
            payload[key] = value
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "change",
    [
        dict(metadata="{not json"),
        dict(metadata="[1, 2]"),
        dict(metadata=5),
        dict(drop="state_dict"),
        dict(drop="metadata"),
        dict(architecture="unet"),
        dict(architecture={"name": "unet", "width": "wide"}),
        dict(architecture={"name": "resnet"}),
        dict(format_version="abc"),
        dict(state_dict=[1, 2]),
        dict(metadata=json.dumps({"kind": "denoiser"})),
    ],
)
def test_tampered_model_metadata_gives_one_clear_message(capsys, tmp_path, model, mic, change):
    bad = _tampered(tmp_path / "bad.pt", model, **change)
    with pytest.raises(ModelFileError, match=str(bad)):
        load_model(bad)
    rc, _, err = cli(capsys, "denoise", "--model", bad, "-o", tmp_path / "o", mic)
    assert rc == 2 and "Traceback" not in err


class Payload:
    pass


def test_pickled_code_is_refused_without_suggesting_to_unpickle(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "nt2c-model", "x": Payload()}, path)
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert "pickled" in str(info.value) and "weights_only" not in str(info.value)


# --- 5. nt2c run validates every section before the first stage -----------------------------


@pytest.mark.parametrize(
    "section, key, value, match",
    [
        (None, "noise_level", "loud", "noise_level"),
        (None, "device", "foo", "device"),
        ("fine", "steps", 0, "fine.steps"),
        ("tiles", "tile", 33, "tile"),
        ("coarse", "steps", "500", "coarse.steps"),
        ("gan", "iterations", -1, "gan.iterations"),
        ("extraction", "threshold", 2.0, "threshold"),
        (None, "min_noise_patches", "many", "min_noise_patches"),
    ],
)
def test_run_validates_the_whole_config_before_any_stage(capsys, tmp_path, mic, section, key, value, match):
    config = PipelineConfig(
        raw=[str(mic)],
        structures=[str(APOFERRITIN)],
        simulation=SimulationConfig(Acquisition(pixel_size=2.5), size=(256, 256), count=2),
    ).to_dict()
    (config[section] if section else config)[key] = value
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    rc, _, err = cli(capsys, "run", path, "--work", tmp_path / "w")
    assert rc == 2 and match in err
    assert not (tmp_path / "w" / "simulate").exists()


def test_run_example_config_is_valid(capsys):
    rc, text, _ = cli(capsys, "run", "--example")
    config = PipelineConfig.from_dict(json.loads(text))
    config.validate()  # what --example prints passes its own validation


# --- 6. the rest of the tracebacks ------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--val-fraction", 1], "val-fraction"),
        (["--checkpoint-every", 0], "checkpoint-every"),
        (["--val-every", 0], "val-every"),
        (["--width", 0], "width"),
        (["--device", "foo"], "device"),
    ],
)
def test_bad_training_flags_are_clear_errors(capsys, tmp_path, pairs, flags, match):
    rc, _, err = cli(capsys, "train", "--pairs", pairs, "-o", tmp_path / "m.pt", "--steps", 1, "--crop", 64, *flags)
    assert rc == 2 and match in err


def test_negative_threads_is_a_clear_error(capsys, tmp_path, mic, model):
    rc, _, err = cli(capsys, "denoise", "--model", model, "-o", tmp_path / "o", "--threads", -1, mic)
    assert rc == 2 and "threads" in err


def test_calibrate_on_a_constant_image_and_zero_micrographs(capsys, tmp_path):
    flat = write_mrc(tmp_path / "flat.mrc", np.full((256, 256), 100.0, np.float32), 1.0)
    rc, _, err = cli(capsys, "calibrate", flat, "-o", tmp_path / "c", "--pixel-size", 1.0)
    assert rc == 2 and "constant" in err
    rc, _, err = cli(capsys, "calibrate", flat, "-o", tmp_path / "c", "--max-micrographs", 0)
    assert rc == 2 and "max-micrographs" in err


def test_simulating_an_impossible_size_is_a_clear_error(capsys, tmp_path):
    rc, _, err = cli(
        capsys, "simulate", "-o", tmp_path / "s", "--structure", APOFERRITIN, "--size", 46340, 46340, "--count", 1
    )
    assert rc == 2 and "size" in err


def test_disk_full_while_saving_a_model_is_a_clear_error(capsys, tmp_path, pairs, monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    rc, _, err = cli(
        capsys,
        "train",
        "--pairs",
        pairs,
        "-o",
        tmp_path / "m.pt",
        "--steps",
        1,
        "--crop",
        64,
        "--width",
        8,
        "--batch-size",
        1,
    )
    assert rc == 2 and "No space left" in err
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


# --- 7. smaller -----------------------------------------------------------------------------


def test_binning_an_image_smaller_than_the_bin_is_refused(capsys, tmp_path, model):
    src = write_mrc(tmp_path / "line.mrc", np.random.default_rng(0).normal(size=(1, 256)), 2.5)
    rc, out, _ = cli(capsys, "denoise", "--model", model, "-o", tmp_path / "o", "--bin", 4, src)
    assert rc == 1 and "too small" in out and not (tmp_path / "o" / "line.mrc").exists()


def test_params_json_reports_the_particles_actually_placed(capsys, tmp_path):
    """As many particles as hexagonal packing fits: random placement cannot reach it, so fewer are
    placed, with a warning and the count in params.json (more than fit is refused: see
    test_reliability_classes)."""
    from nt2c_core.simulate.micrograph import max_particles
    from nt2c_core.simulate.structure import load_structure

    most = max_particles(256, 256, load_structure(APOFERRITIN).radius / 2.5)  # more than random placement reaches
    rc, out, err = cli(
        capsys,
        "simulate",
        "-o",
        tmp_path / "s",
        "--structure",
        APOFERRITIN,
        "--size",
        256,
        256,
        "--pixel-size",
        2.5,
        "--particles",
        most,
        "--count",
        1,
    )
    params = json.loads((tmp_path / "s" / "params.json").read_text())
    placed = params["particles_placed"]["mic_0000"]
    assert rc == 0 and 0 < placed < most and f"placed {placed}" in out + err


def test_stale_temporaries_of_ours_are_cleaned_on_the_next_run(capsys, tmp_path, mic, model):
    out = tmp_path / "o"
    out.mkdir()
    stale = out / ".mic.mrc.nt2c-abc12345.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    foreign = out / ".someone-else.tmp"
    foreign.write_bytes(b"keep")
    os.utime(foreign, (old, old))
    assert cli(capsys, "denoise", "--model", model, "-o", out, mic)[0] == 0
    assert not stale.exists() and foreign.exists()


def test_sigterm_leaves_no_temporary_files(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nt2c_core.cli",
            "simulate",
            "-o",
            str(tmp_path / "s"),
            "--structure",
            str(APOFERRITIN),
            "--size",
            "512",
            "512",
            "--pixel-size",
            "2",
            "--count",
            "400",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "s").glob("noisy/*.mrc")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-500:]
    assert b"Traceback" not in err
    assert not [p for p in (tmp_path / "s").rglob("*.tmp")]
