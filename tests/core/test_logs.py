"""Messages and progress readable in a Scipion run log; the CLI's --quiet/--verbose/--log-file;
``nt2c --help`` loads no heavy library."""

import os
import subprocess
import sys

import numpy as np
import pytest

from nt2c_core.cli import main
from nt2c_core.io import write_mrc
from nt2c_core.logs import PlainProgress, configure, progress


@pytest.fixture(autouse=True)
def default_logging():
    yield
    configure(0, None)


def test_progress_is_plain_lines_when_output_is_not_a_terminal(capsys):
    bar = progress(range(20), desc="train", unit="step")
    assert isinstance(bar, PlainProgress)  # pytest's stderr is not a terminal, nor is a Scipion log
    for _ in bar:
        bar.set_postfix(loss="0.0420")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "\r" not in out and 2 <= len(lines) <= 11  # every 10 %, not every step
    assert lines[-1].startswith("train: 20/20 (100%)") and "step/s" in lines[-1] and lines[-1].endswith("loss=0.0420")
    assert "ETA" in lines[0]


def test_help_builds_without_torch_numpy_or_scipy():
    code = (
        "import sys; from nt2c_core.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'numpy', 'scipy', 'gemmi', 'matplotlib') if m in sys.modules]; "
        "sys.exit(str(heavy) if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_quiet_verbose_and_log_file(tmp_path, capsys):
    mic = write_mrc(tmp_path / "mic.mrc", np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), 1.0)
    assert main(["denoise", str(mic), "-o", str(tmp_path / "a"), "--device", "cpu"]) == 0
    normal = capsys.readouterr().out
    assert "using the shipped general model" in normal and "1 denoised" in normal
    log_file = tmp_path / "nt2c.log"
    assert (
        main(
            ["--quiet", "denoise", str(mic), "-o", str(tmp_path / "b"), "--device", "cpu", "--log-file", str(log_file)]
        )
        == 0
    )
    assert capsys.readouterr().out == ""  # --quiet: warnings and errors only
    assert main(["denoise", "-q", str(mic), "-o", str(tmp_path / "c"), "--device", "cpu"]) == 0  # after the command too
    assert capsys.readouterr().out == ""
    configure(0, None)
    assert main(["denoise", str(mic), "-o", str(tmp_path / "d"), "--device", "cpu", "--log-file", str(log_file)]) == 0
    text = log_file.read_text()
    assert "1 denoised" in text and text.splitlines()[0][:4].isdigit()  # time-stamped
    assert main(["denoise", str(mic), "-o", str(tmp_path / "e"), "--log-file", str(tmp_path / "no" / "x.log")]) == 2
    assert "--log-file" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings are Linux-only")
def test_stages_keep_freed_memory_unless_told_not_to():
    """Every stage keeps the memory it frees for reuse (glibc): the 3-D U-Net's large activations
    are then not unmapped and zeroed again for every tile. NT2C_KEEP_FREED_MEMORY=0 leaves glibc's
    default; a second call changes nothing."""
    code = (
        "from nt2c_core.device import keep_freed_memory, release_freed_memory\n"
        "from nt2c_core.logs import stage\n"
        "with stage('x', 'cpu'):\n    pass\n"
        "release_freed_memory()\n"
        "print(keep_freed_memory(), keep_freed_memory())"
    )
    for env, expect in (({}, "True True"), ({"NT2C_KEEP_FREED_MEMORY": "0"}, "False False")):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, check=True
        )
        lines = done.stdout.strip().splitlines()
        assert lines[0].startswith("x: device cpu"), done.stdout  # the stage ran
        assert lines[-1] == expect, done.stderr
