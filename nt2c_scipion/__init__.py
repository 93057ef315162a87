"""Scipion plugin for Noise-Transfer2Clean (NT2C) cryo-EM denoising.

Two routes run the computation (``nt2c_core``):

- **in-process** (default when it works): Scipion's Python is >= 3.10 and has torch, i.e. the
  plugin was installed with pip into Scipion's environment with its dependencies;
- **isolated**: Scipion's Python is older or has no torch. ``scipion3 installb nt2c`` then builds a
  dedicated pip virtualenv (no conda) holding ``nt2c_core``, torch (the requirement in
  ``NT2C_TORCH``) and their dependencies, and the protocols call its ``nt2c`` command line through
  ``runJob`` (logs in the run's stdout; queue submission as for any program).

This module, the protocols' forms and the menus import neither torch nor numpy-heavy parts of the
core, and run on every Python that scipion-pyworkflow supports (>= 3.8).
"""

import functools
import os
import shlex
import sys
from pathlib import Path

import pwem

from nt2c_core import __version__  # noqa: F401  (one version for core and plugin)

from .constants import NT2C_DEVICE_VAR, NT2C_HOME_VAR, NT2C_PYTHON_VAR, NT2C_ROUTE_VAR, NT2C_TORCH_VAR, ROUTES

_references = ["Li2022NT2C"]
_logo = "nt2c_logo.png"  # shown in Scipion's protocol forms

DISTRIBUTION = "scipion-em-nt2c"
CORE_PYTHON = (3, 10)  # torch 2.x and nt2c_core need at least this Python


class Plugin(pwem.Plugin):
    _url = "https://github.com/scipion-em/scipion-em-nt2c"
    _processingField = ["SPA"]
    _homeVar = NT2C_HOME_VAR
    # no _pathVars: pyworkflow would then refuse every protocol while NT2C_HOME is missing, which
    # is normal on the in-process route; validateCore() checks it only where it is needed

    @classmethod
    def _defineVariables(cls):
        # Variables live in a dict shared by all plugins: every name is prefixed NT2C_.
        cls._defineVar(NT2C_DEVICE_VAR, "auto", description="torch device for NT2C steps: auto, cpu or cuda")
        cls._defineEmVar(
            NT2C_HOME_VAR,
            f"nt2c-{__version__}",
            description="Dedicated environment of the isolated route (scipion3 installb nt2c)",
        )
        cls._defineVar(
            NT2C_TORCH_VAR,
            "torch>=2.1",
            description="pip requirement of torch in the dedicated environment, e.g. torch==2.5.1 "
            "or a CPU build; pip picks the CUDA build of the platform by default",
        )
        cls._defineVar(NT2C_PYTHON_VAR, "python3", description="Python >= 3.10 that creates the dedicated environment")
        cls._defineVar(
            NT2C_ROUTE_VAR,
            "auto",
            description="auto (in-process when nt2c_core and torch import in Scipion's Python, "
            "else the dedicated environment), in-process or isolated",
        )

    @classmethod
    def getEnviron(cls):
        """Environment of the ``nt2c`` jobs (pyworkflow's Environ: runJob needs its methods)."""
        import pyworkflow.utils as pwutils

        return pwutils.Environ(os.environ)

    # --- which route ----------------------------------------------------------------------
    @classmethod
    def route(cls) -> str:
        value = os.environ.get(NT2C_ROUTE_VAR, cls.getVar(NT2C_ROUTE_VAR, "auto")) or "auto"
        return value if value in ROUTES else "auto"

    @classmethod
    def coreInProcess(cls) -> bool:
        """True when the protocols run nt2c_core inside Scipion's Python: NT2C_ROUTE=in-process, or
        'auto' where torch plus the core import here (Python >= 3.10); False for 'isolated'."""
        route = cls.route()
        return route == "in-process" if route != "auto" else _core_imports()

    @classmethod
    def getProgram(cls) -> str:
        """The dedicated environment's ``nt2c`` command line."""
        return cls.getHome("env", "bin", "nt2c")

    @classmethod
    def denoiseImage(cls, model, image, pixel_size: float):
        """``image`` (a small 2-D array: a viewer's or wizard's crop) denoised on the CPU with the
        denoiser file ``model``: here on the in-process route, else by the dedicated environment's
        ``nt2c denoise`` on a temporary MRC of ``pixel_size`` Å/px (a few seconds; the GUI never
        imports torch there)."""
        if cls.coreInProcess():
            from nt2c_core.denoise import Denoiser

            return Denoiser.from_file(model).denoise(image)
        import subprocess
        import tempfile

        from nt2c_core.io import read_mrc, write_mrc

        with tempfile.TemporaryDirectory(prefix="nt2c-preview-") as tmp:
            source = write_mrc(Path(tmp) / "crop.mrc", image, pixel_size)
            run = subprocess.run(
                [
                    cls.getProgram(),
                    "-q",
                    "denoise",
                    "--model",
                    str(model),
                    "-o",
                    str(Path(tmp) / "out"),
                    "--device",
                    "cpu",
                    str(source),
                ],
                capture_output=True,
                text=True,
                env=cls.getEnviron(),
            )
            if run.returncode:
                raise RuntimeError(f"{cls.getProgram()} denoise: {run.stderr.strip() or run.returncode}")
            return read_mrc(Path(tmp) / "out" / "crop.mrc")[0]

    @classmethod
    def validateCore(cls) -> list:
        """Form errors when the chosen route cannot run the computation (empty list when it can)."""
        if cls.coreInProcess():
            if _core_imports():
                return []
            return [
                f"NT2C_ROUTE=in-process, but nt2c_core and torch do not import in Scipion's Python "
                f"{sys.version.split()[0]} (Python >= {CORE_PYTHON[0]}.{CORE_PYTHON[1]} with torch needed): "
                f"set NT2C_ROUTE=auto to use the dedicated environment (scipion3 installb nt2c)."
            ]
        if os.path.isfile(cls.getProgram()) and os.access(cls.getProgram(), os.X_OK):
            return []
        why = (
            "NT2C_ROUTE=isolated"
            if cls.route() == "isolated"
            else f"nt2c_core cannot run in Scipion's Python {sys.version.split()[0]} "
            f"(it needs Python >= {CORE_PYTHON[0]}.{CORE_PYTHON[1]} with torch)"
        )
        return [
            f"{why}, and the dedicated NT2C environment is not installed at {cls.getHome()}: "
            f"run 'scipion3 installb nt2c' (torch requirement from {NT2C_TORCH_VAR}), or install the "
            f"plugin with pip into a Python >= 3.10 with torch."
        ]

    # --- the dedicated environment ----------------------------------------------------------
    @classmethod
    def coreRequirements(cls) -> list:
        """nt2c_core's pip requirements except torch (NT2C_TORCH chooses that one), read from this
        package's installed metadata: the list in setup.py is the only copy."""
        from importlib.metadata import PackageNotFoundError, requires

        try:
            reqs = requires(DISTRIBUTION) or []
        except PackageNotFoundError:
            raise RuntimeError(
                f"{DISTRIBUTION} is not installed with pip in this Python: install it "
                f"(scipion3 installp -p <checkout> --devel, or pip install {DISTRIBUTION})"
            )
        core = []
        for req in reqs:
            spec, _, marker = req.partition(";")
            name = spec.strip().split("[")[0]
            for sep in "<>=!~ (":
                name = name.split(sep)[0]
            if "extra" in marker or name.startswith("scipion") or name == "torch":
                continue
            core.append(spec.strip())
        return core

    @classmethod
    def installSource(cls) -> str:
        """What pip installs nt2c_core from: this checkout when the plugin runs from one (a devel
        install), else the released package of the same version."""
        checkout = Path(__file__).resolve().parents[1]
        if (checkout / "setup.py").is_file() and (checkout / "nt2c_core").is_dir():
            return str(checkout)
        return f"{DISTRIBUTION}=={__version__}"

    @classmethod
    def installCommand(cls) -> str:
        """Shell commands (run in the package folder) that build the dedicated environment ``env``:
        a pip virtualenv with torch, the core's dependencies and nt2c_core itself (--no-deps: it
        needs no Scipion)."""
        python = cls.getVar(NT2C_PYTHON_VAR, "python3") or "python3"
        torch = cls.getVar(NT2C_TORCH_VAR, "torch>=2.1") or "torch>=2.1"
        pip = "env/bin/python -m pip install --quiet"
        reqs = " ".join(shlex.quote(r) for r in cls.coreRequirements())
        return " && ".join(
            [
                "rm -rf env",
                f"{python} -m venv env",
                f"{pip} --upgrade pip",
                f"{pip} {shlex.quote(torch)}",
                f"{pip} {reqs}",
                f"{pip} --no-deps {shlex.quote(cls.installSource())}",
                "env/bin/nt2c --version",
            ]
        )

    @classmethod
    def defineBinaries(cls, env):
        """``scipion3 installb nt2c``: the dedicated environment of the isolated route. Installed
        by default only where Scipion's Python cannot run nt2c_core itself."""
        env.addPackage(
            "nt2c",
            version=__version__,
            tar="void.tgz",
            commands=[(cls.installCommand(), ["env/bin/nt2c"])],
            neededProgs=[],
            default=not _core_imports(),
        )


@functools.lru_cache(maxsize=None)
def _core_imports() -> bool:
    """Whether torch and nt2c_core import in this Python (asked once per process)."""
    if sys.version_info < CORE_PYTHON:
        return False
    try:
        import torch  # noqa: F401

        import nt2c_core.denoise  # noqa: F401
    except ImportError:
        return False
    return True
