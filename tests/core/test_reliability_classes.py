"""Reliability II (issue #40): each class of fault a hostile user found, on every command it
reaches. Each case ends in one message naming the file or flag (exit 2, no traceback), or the
right result; nothing hangs; no output ever lands on an input. The README's *Reliability*
section lists the classes. Everything here is tiny and made by the tests."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_reliability import cli  # ``nt2c ARGV`` in-process: (exit code, stdout, stderr)

from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN
from nt2c_core.general import GENERAL_MODEL
from nt2c_core.io import write_mrc

NT2C = [sys.executable, "-m", "nt2c_core.cli"]


def refused(capsys, match: str, *argv) -> str:
    rc, out, err = cli(capsys, *argv)
    assert rc == 2, (rc, out[-500:], err[-500:])
    assert match in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    return err


def run_sub(*argv, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*NT2C, *map(str, argv)], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, **kw
    )


@pytest.fixture()
def mic(tmp_path):
    rng = np.random.default_rng(0)
    return write_mrc(tmp_path / "in" / "mic.mrc", rng.poisson(20, (96, 96)).astype(np.float32), 2.5)


@pytest.fixture(scope="module")
def particles(tmp_path_factory):
    """A tiny particle set (box 32) with its STAR file, and a tiny restorer trained on it."""
    root = tmp_path_factory.mktemp("particles")
    assert (
        main(
            [
                "simulate-particles",
                "-o",
                str(root / "sim"),
                "--structure",
                str(APOFERRITIN),
                "--count",
                "8",
                "--box",
                "32",
                "--pixel-size",
                "6",
                "--dose",
                "20",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train-restorer",
                str(root / "sim"),
                "-o",
                str(root / "r.pt"),
                "--steps",
                "2",
                "--refine-steps",
                "1",
                "--refine-pool",
                "4",
                "--batch-size",
                "2",
                "--width",
                "8",
                "--refine-width",
                "8",
            ]
        )
        == 0
    )
    return root / "sim", root / "r.pt"


# --- input paths ---------------------------------------------------------------------------


def test_symlink_loop_is_a_clear_error(capsys, tmp_path):
    loop = tmp_path / "loop.mrc"
    loop.symlink_to(loop)
    refused(capsys, "loop.mrc", "denoise", "-o", tmp_path / "o", loop)
    refused(capsys, "loop.mrc", "model-info", loop)


def test_a_folder_given_as_a_file_is_a_clear_error(capsys, tmp_path):
    (tmp_path / "dir.mrc").mkdir()
    refused(capsys, "dir.mrc", "model-info", tmp_path / "dir.mrc")
    refused(capsys, "dir.mrc", "reconstruct", tmp_path / "dir.mrc", "-o", tmp_path / "m.mrc")


def test_unreadable_input_is_a_clear_error(capsys, tmp_path, mic, monkeypatch):
    """A file without read permission (as root reads anything, the refusal is made by the file
    system stand-in below, as an unprivileged user gets it): one line naming the file."""
    import builtins
    import io

    real_open = builtins.open

    def guarded(file, *a, **k):
        if str(file) == str(mic):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)
    rc, out, err = cli(capsys, "denoise", "-o", tmp_path / "o", mic)  # a batch: that micrograph fails, by name
    assert rc == 1 and "mic.mrc: Permission denied" in out + err and "Traceback" not in err
    refused(capsys, "mic.mrc: Permission denied", "calibrate", "-o", tmp_path / "c", mic)


def test_non_ascii_file_names_under_an_ascii_locale(tmp_path):
    done = run_sub("model-info", tmp_path / "mikrograf_ñ.mrc", env={"LC_ALL": "C", "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 2 and "mikrograf_" in done.stderr and "file not found" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# --- output faults -------------------------------------------------------------------------


def test_log_file_on_a_full_device_is_a_clear_error(tmp_path):
    done = run_sub("model-info", GENERAL_MODEL, "--log-file", "/dev/full")
    assert done.returncode == 2 and "/dev/full" in done.stderr and "No space left" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr


def test_stdout_on_a_full_device_is_a_clear_error():
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*NT2C, "model-info", str(GENERAL_MODEL)], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert done.returncode == 2 and "standard output" in done.stderr and "No space left" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_closed_stdout_still_runs_the_command(tmp_path, mic):
    """``nt2c ... >&-``: no stdout at all; the work is done, messages are dropped."""
    done = subprocess.run(
        [*NT2C, "denoise", "-o", str(tmp_path / "o"), str(mic)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "mic.mrc").is_file()


def test_work_folder_that_is_a_file_and_read_only_outputs(capsys, tmp_path, mic):
    (tmp_path / "work").write_text("not a folder")
    config = tmp_path / "c.json"
    rc, out, _ = cli(capsys, "run", "--example")
    cfg = json.loads(out)
    cfg["raw"] = [str(mic)]
    cfg["structures"] = [str(APOFERRITIN)]
    config.write_text(json.dumps(cfg))
    refused(capsys, "work", "run", config, "--work", tmp_path / "work")
    refused(capsys, "work", "extract-noise", "-o", tmp_path / "work" / "noise", "--particle-diameter", "120", mic)


# --- structures ----------------------------------------------------------------------------


def _nan_pdb(tmp_path) -> Path:
    text = (
        gzip.decompress(APOFERRITIN.read_bytes()).decode() if APOFERRITIN.suffix == ".gz" else APOFERRITIN.read_text()
    )
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("ATOM"))
    lines[i] = lines[i][:30] + f"{'nan':>8}" + lines[i][38:]
    path = tmp_path / "nan.pdb"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_nan_coordinates_in_a_structure_are_refused(capsys, tmp_path):
    pdb = _nan_pdb(tmp_path)
    refused(capsys, "nan.pdb", "simulate", "-o", tmp_path / "s", "--structure", pdb, "--size", "128", "128")
    refused(
        capsys, "nan.pdb", "simulate-particles", "-o", tmp_path / "p", "--structure", pdb, "--count", "2", "--box", "32"
    )


# --- models --------------------------------------------------------------------------------


def test_model_metadata_asking_for_a_huge_network_is_refused_before_allocating(capsys, tmp_path, mic):
    import torch

    blob = torch.load(GENERAL_MODEL, map_location="cpu", weights_only=True)
    meta = json.loads(blob["metadata"]) if isinstance(blob.get("metadata"), str) else dict(blob["metadata"])
    meta["architecture"] = {**meta["architecture"], "width": 10**6}
    blob["metadata"] = json.dumps(meta) if isinstance(blob.get("metadata"), str) else meta
    torch.save(blob, tmp_path / "huge.pt")
    refused(capsys, "huge.pt", "denoise", "--model", tmp_path / "huge.pt", "-o", tmp_path / "o", mic)


def test_restorer_width_is_validated(capsys, tmp_path, particles):
    sim, _ = particles
    refused(capsys, "--width", "train-restorer", sim, "-o", tmp_path / "r.pt", "--width", "7")
    refused(capsys, "--refine-width", "train-restorer", sim, "-o", tmp_path / "r.pt", "--refine-width", "3")


# --- STAR files ----------------------------------------------------------------------------


def test_star_without_image_names_or_rows(capsys, tmp_path, particles):
    sim, model = particles
    text = (sim / "particles.star").read_text()
    (tmp_path / "noname.star").write_text(text.replace("_rlnImageName", "_rlnSomethingElse"))
    refused(capsys, "noname.star", "reconstruct", tmp_path / "noname.star", "-o", tmp_path / "m.mrc")
    refused(
        capsys, "noname.star", "restore-particles", tmp_path / "noname.star", "-o", tmp_path / "o", "--model", model
    )
    head = text[: text.index("data_particles")]
    loop = text[text.index("data_particles") :]
    columns = [line for line in loop.splitlines() if line.startswith(("data_", "loop_", "_"))]
    (tmp_path / "empty.star").write_text(head + "\n".join(columns) + "\n")
    refused(capsys, "no particles", "reconstruct", tmp_path / "empty.star", "-o", tmp_path / "m.mrc")
    refused(
        capsys, "no particles", "restore-particles", tmp_path / "empty.star", "-o", tmp_path / "o", "--model", model
    )


@pytest.mark.parametrize("index", ["0", "-3", "9"])
def test_star_image_indices_are_one_based_and_checked(capsys, tmp_path, particles, index):
    sim, model = particles
    text = (sim / "particles.star").read_text().replace("000002@particles.mrcs", f"{index}@particles.mrcs")
    star = sim / f"bad_index_{index.replace('-', 'm')}.star"
    star.write_text(text)
    refused(capsys, "image", "reconstruct", star, "-o", tmp_path / "m.mrc")
    refused(capsys, "image", "restore-particles", star, "-o", tmp_path / "o", "--model", model)
    assert not (tmp_path / "m.mrc").exists() and not (tmp_path / "o").exists()


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, match",
    [
        (["simulate", "-o", "{t}/s", "--structure", APOFERRITIN, "--seed", "-1"], "--seed"),
        (["simulate-particles", "-o", "{t}/s", "--structure", APOFERRITIN, "--seed", "-1"], "--seed"),
        (["calibrate", "-o", "{t}/c", "--pixel-size", "0", "{mic}"], "--pixel-size"),
        (["calibrate", "-o", "{t}/c", "--pixel-size", "-1", "{mic}"], "--pixel-size"),
        (["calibrate", "-o", "{t}/c", "--known-defocus", "nan", "1", "0", "{mic}"], "--known-defocus"),
        (["calibrate", "-o", "{t}/c", "--dose", "inf", "{mic}"], "--dose"),
        (["evaluate", "--truth", "{t}/in", "--pred", "{t}/in", "--box", "1000000000", "-o", "{t}/e"], "--box"),
        (["evaluate", "--truth", "{t}/in", "--pred", "{t}/in", "--box", "-5", "-o", "{t}/e"], "--box"),
        (["evaluate", "--truth", "{t}/missing", "--pred", "{t}/in", "-o", "{t}/e"], "missing"),
        (["train-general", "-o", "{t}/g", "--configs", "0"], "--configs"),
        (
            [
                "simulate",
                "-o",
                "{t}/s",
                "--structure",
                APOFERRITIN,
                "--particles",
                "1000000",
                "--size",
                "256",
                "256",
                "--pixel-size",
                "4",
            ],
            "--particles",
        ),
        (
            [
                "simulate",
                "-o",
                "{t}/s",
                "--structure",
                APOFERRITIN,
                "--concentration",
                "1e12",
                "--size",
                "256",
                "256",
                "--pixel-size",
                "4",
            ],
            "--concentration",
        ),
        (["simulate", "-o", "{t}/s", "--structure", APOFERRITIN, "--pixel-size", "nan"], "pixel size"),
    ],
)
def test_values_that_cannot_be_met_are_clear_errors(capsys, tmp_path, mic, argv, match):
    big = write_mrc(
        tmp_path / "big" / "mic.mrc", np.random.default_rng(0).poisson(20, (256, 256)).astype(np.float32), 2.5
    )
    argv = [str(a).replace("{t}", str(tmp_path)).replace("{mic}", str(big)) for a in argv]
    refused(capsys, match, *argv)


def test_seed_minus_one_for_training_and_restoring(capsys, tmp_path, particles):
    sim, model = particles
    refused(
        capsys,
        "--seed",
        "restore-particles",
        sim / "particles.mrcs",
        "-o",
        tmp_path / "o",
        "--model",
        model,
        "--seed",
        "-1",
    )
    refused(capsys, "--seed", "train", "--pairs", sim, "-o", tmp_path / "m.pt", "--seed", "-1")
    refused(
        capsys,
        "--samples",
        "restore-particles",
        sim / "particles.mrcs",
        "-o",
        tmp_path / "o",
        "--model",
        model,
        "--samples",
        "100000",
    )


def test_settings_files_with_wrong_types_or_too_deep(capsys, tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"size": "big", "count": [1]}))
    refused(
        capsys,
        "s.json",
        "simulate",
        "-o",
        tmp_path / "s",
        "--structure",
        APOFERRITIN,
        "--settings",
        tmp_path / "s.json",
    )
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    refused(
        capsys,
        "deep.json",
        "simulate",
        "-o",
        tmp_path / "s",
        "--structure",
        APOFERRITIN,
        "--settings",
        tmp_path / "deep.json",
    )
    refused(capsys, "deep.json", "run", tmp_path / "deep.json", "--work", tmp_path / "w")


def test_run_config_with_a_wrong_type(capsys, tmp_path, mic):
    rc, out, _ = cli(capsys, "run", "--example")
    cfg = json.loads(out)
    cfg["raw"], cfg["structures"] = [str(mic)], [str(APOFERRITIN)]
    cfg.setdefault("simulation", {})["size"] = "big"
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    refused(capsys, "simulation.size", "run", tmp_path / "c.json", "--work", tmp_path / "w")


# --- silent wrong outputs ------------------------------------------------------------------


def test_a_corrupt_earlier_output_is_redone_not_counted_done(capsys, tmp_path, mic):
    assert cli(capsys, "denoise", "-o", tmp_path / "o", mic)[0] == 0
    out = tmp_path / "o" / "mic.mrc"
    import mrcfile

    with mrcfile.open(out, "r+") as m:
        m.data[3, 3] = np.nan
    rc, text, err = cli(capsys, "denoise", "-o", tmp_path / "o", mic)
    assert rc == 0 and "redo" in (text + err).lower(), text + err
    from nt2c_core.io import read_mrc

    assert np.isfinite(read_mrc(out)[0]).all()


def test_evaluate_never_writes_nan(capsys, tmp_path, mic):
    (tmp_path / "pred").mkdir()
    write_mrc(tmp_path / "pred" / "mic.mrc", np.full((96, 96), 3.0, np.float32), 2.5)
    refused(capsys, "constant", "evaluate", "--truth", mic.parent, "--pred", tmp_path / "pred", "-o", tmp_path / "e")
    assert not (tmp_path / "e").exists() or "NaN" not in "".join(p.read_text() for p in (tmp_path / "e").glob("*.json"))


# --- outputs aimed at inputs ---------------------------------------------------------------


def test_outputs_never_land_on_inputs(capsys, tmp_path, mic, particles):
    sim, restorer = particles
    before = mic.read_bytes()
    refused(capsys, "input", "denoise", "-o", tmp_path / "o", "--log-file", mic, mic)
    hard = tmp_path / "hard.mrc"
    os.link(mic, hard)
    refused(capsys, "input", "denoise", "-o", tmp_path / "o", "--log-file", hard, mic)
    link = tmp_path / "link.mrc"
    link.symlink_to(mic)
    refused(capsys, "input", "denoise", "-o", tmp_path / "o", "--log-file", link, mic)
    assert mic.read_bytes() == before

    model = tmp_path / "model.pt"
    model.write_bytes(GENERAL_MODEL.read_bytes())
    size = model.stat().st_size
    refused(capsys, "input", "model-info", model, "--json", model)
    refused(capsys, "input", "train", "--pairs", sim, "--init", model, "-o", model, "--overwrite")
    assert model.stat().st_size == size

    ref = sim / "map_0.mrc"
    ref_bytes = ref.read_bytes()
    refused(capsys, "input", "reconstruct", sim / "particles.star", "-o", ref, "--reference", ref)
    assert ref.read_bytes() == ref_bytes
    refused(capsys, "input", "reweight", "--pairs", sim, "--noise-model", model, "-o", sim)

    vol = write_mrc(tmp_path / "tomo.mrc", np.random.default_rng(1).normal(size=(16, 32, 32)).astype(np.float32), 8.0)
    vol_bytes = vol.read_bytes()
    refused(capsys, "input", "denoise-tomo", vol, "-o", tmp_path / "d.mrc", "--save-model", vol)
    refused(capsys, "input", "denoise-tomo", vol, "-o", vol)
    assert vol.read_bytes() == vol_bytes


# --- nt2c run: every input checked before the first stage -----------------------------------


def _run_config(tmp_path, raw, **changes) -> Path:
    from nt2c_core.pipeline import PipelineConfig
    from nt2c_core.simulate import Acquisition, SimulationConfig

    config = PipelineConfig(
        raw=[str(p) for p in raw],
        structures=[str(APOFERRITIN)],
        simulation=SimulationConfig(Acquisition(pixel_size=2.5), size=(256, 256), count=2),
    ).to_dict()
    config.update(changes)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    return path


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("fault", ["nan", "truncated", "gan", "pickle", "nan-structure"])
def test_run_refuses_a_bad_input_before_the_first_stage(capsys, tmp_path, mic, fault):
    import torch

    from nt2c_core.models import save_model
    from nt2c_core.models.gan import NoiseGenerator

    second = tmp_path / "in" / "mic2.mrc"
    data = np.random.default_rng(1).poisson(20, (96, 96)).astype(np.float32)
    changes = {}
    if fault == "nan":
        data[5, 5] = np.nan
    write_mrc(second, data, 2.5)
    if fault == "truncated":
        second.write_bytes(second.read_bytes()[:-100])
    if fault == "gan":
        changes["coarse_init"] = str(save_model(tmp_path / "gan.pt", NoiseGenerator(8, 8), {"kind": "noise-gan"}))
    if fault == "pickle":
        torch.save({"format": "nt2c-model", "x": _Payload()}, tmp_path / "evil.pt")
        changes["coarse_init"] = str(tmp_path / "evil.pt")
    if fault == "nan-structure":
        changes["structures"] = [str(_nan_pdb(tmp_path))]
    config = _run_config(tmp_path, [mic, second], **changes)
    rc, out, err = cli(capsys, "run", config, "--work", tmp_path / "w")
    assert rc == 2 and "Traceback" not in err and "pickled code ran" not in out, err
    expected = {
        "nan": "mic2.mrc",
        "truncated": "mic2.mrc",
        "gan": "gan.pt",
        "pickle": "evil.pt",
        "nan-structure": "nan.pdb",
    }[fault]
    assert expected in err, err
    assert not (tmp_path / "w" / "simulate").exists()


def test_a_damaged_done_record_redoes_its_stage(tmp_path, caplog):
    from nt2c_core.pipeline import _done_record

    done = tmp_path / "simulate" / "DONE.json"
    done.parent.mkdir()
    done.write_text('{"seconds": 1')
    assert _done_record(done) is None and not done.exists() and (done.parent / "DONE.json.damaged").exists()
    assert "damaged" in caplog.text
    done.write_text('{"seconds": 1}')
    assert _done_record(done) == {"seconds": 1}


def test_torch_out_of_memory_fails_one_micrograph_and_the_batch_goes_on(tmp_path, monkeypatch):
    """torch reports a failed allocation as RuntimeError ('DefaultCPUAllocator: can't allocate
    memory', CUDA 'out of memory'), not MemoryError: that micrograph fails, the others are done."""
    from nt2c_core.denoise import Denoiser, denoise_files

    files = [
        write_mrc(tmp_path / "in" / f"m{i}.mrc", np.random.default_rng(i).normal(size=(64, 64)), 2.5) for i in range(3)
    ]
    denoiser = Denoiser.from_file(GENERAL_MODEL)
    real, marker = denoiser.denoise, float(np.random.default_rng(1).normal(size=(64, 64))[0, 0])

    def flaky(image):
        if abs(float(image[0, 0]) - marker) < 1e-6:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
        return real(image)

    monkeypatch.setattr(denoiser, "denoise", flaky)
    report = denoise_files(denoiser, files, tmp_path / "o", progress=False)
    assert len(report.written) == 2 and "memory" in report.failed[str(files[1])]


@pytest.fixture()
def read_only_folder(tmp_path):
    """A read-only file system (a tmpfs mounted ro): refused even to root, as a full or read-only
    facility disk is. Skipped where the test may not mount."""
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs here ({done.stderr.decode().strip()[:80]})")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_output_folders_are_refused_before_any_work(capsys, tmp_path, mic, read_only_folder):
    ro = read_only_folder
    rc, out, _ = cli(capsys, "run", "--example")
    config = _run_config(tmp_path, [mic])
    refused(capsys, "ro/work", "run", config, "--work", ro / "work")
    refused(capsys, "ro", "extract-noise", "-o", ro, "--particle-diameter", "120", mic)
    refused(capsys, "ro", "denoise", "-o", ro, mic)
    refused(
        capsys,
        "ro",
        "simulate",
        "-o",
        ro / "sim",
        "--structure",
        APOFERRITIN,
        "--size",
        "256",
        "256",
        "--pixel-size",
        "4",
    )
    refused(capsys, "ro", "model-info", GENERAL_MODEL, "--json", ro / "m.json")


def test_run_never_writes_over_its_inputs(capsys, tmp_path):
    """Raw micrographs inside a stage folder of the work folder (e.g. an earlier run's denoised
    output given as raw) are refused: the denoised stage would write over them."""
    work = tmp_path / "w"
    raw = write_mrc(
        work / "denoised" / "mic.mrc", np.random.default_rng(0).poisson(20, (96, 96)).astype(np.float32), 2.5
    )
    before = raw.read_bytes()
    refused(capsys, "write over its input", "run", _run_config(tmp_path, [raw]), "--work", work)
    assert raw.read_bytes() == before
