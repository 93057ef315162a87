"""Scipion plugin for Noise-Transfer2Clean (NT2C) cryo-EM micrograph denoising.

The computation lives in ``nt2c_core``, a pip dependency of the same Python environment, so the
plugin installs no binaries and needs no conda environment: ``pip install scipion-em-nt2c``.
"""

import os

import pwem

from nt2c_core import __version__  # noqa: F401  (one version for core and plugin)

from .constants import NT2C_DEVICE_VAR

_references = ["Li2022NT2C"]
_logo = "nt2c_logo.png"  # shown in Scipion's protocol forms


class Plugin(pwem.Plugin):
    _url = "https://github.com/scipion-em/scipion-em-nt2c"
    _processingField = ["SPA"]

    @classmethod
    def _defineVariables(cls):
        # Variables live in a dict shared by all plugins: every name is prefixed NT2C_.
        cls._defineVar(NT2C_DEVICE_VAR, "auto", description="torch device for NT2C steps: auto, cpu or cuda")

    @classmethod
    def getEnviron(cls):
        return os.environ.copy()

    @classmethod
    def defineBinaries(cls, env):
        """Nothing to install: nt2c_core is a Python dependency of this package."""
