"""Test environment: Scipion reads its configuration at import, so set it before anything imports
pyworkflow (shared design notes, "Headless pitfalls")."""

import os
import sys
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="nt2c-scipion-"))
for _name in ("home", "user", "tests"):
    (_ROOT / _name).mkdir(exist_ok=True)
(_ROOT / "home" / "config").mkdir(exist_ok=True)
(_ROOT / "home" / "config" / "hosts.conf").write_text(
    "[localhost]\nPARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d --map-by node %_(COMMAND)s\n"
)
os.environ.setdefault("SCIPION_HOME", str(_ROOT / "home"))
os.environ.setdefault("SCIPION_USER_DATA", str(_ROOT / "user"))
os.environ.setdefault("SCIPION_TESTS", str(_ROOT / "tests"))
os.environ.setdefault("SCIPION_DOMAIN", "pwem")
os.environ.setdefault("SCIPION_PYTHON", sys.executable)
os.environ.setdefault("SCIPION_TEST_NOSYNC", "1")
os.environ.setdefault("SCIPION_NOTIFY", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
