"""scipion-em-nt2c: Noise-Transfer2Clean cryo-EM micrograph denoising for Scipion."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "nt2c_core" / "__init__.py").read_text()).group(1)

# pyworkflow 3.11.1: ProtStreamingBase's streaming form and per-step needsGPU / GPU booking
SCIPION_REQUIRES = ["scipion-pyworkflow>=3.11.1", "scipion-em>=3.10.0"]
# nt2c_core's requirements: also what 'scipion3 installb nt2c' installs in the dedicated environment
# (torch there from the NT2C_TORCH variable). Any torch >= 2.1 works; install the build for your
# machine (CPU or CUDA) first.
CORE_REQUIRES = ["torch>=2.1", "mrcfile", "numpy", "scikit-image", "gemmi>=0.6", "scipy", "starfile>=0.5", "pandas",
                 "tqdm", "matplotlib"]

setup(
    name="scipion-em-nt2c",
    version=VERSION,
    description="NT2C cryo-EM micrograph and NMSG tomogram denoising: core library, CLI and Scipion plugin",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPLv3",
    # The plugin (menus, forms, the isolated route) imports on every Python pyworkflow supports;
    # nt2c_core and its dependencies need Python >= 3.10 and are installed only there (on an older
    # Scipion Python, 'scipion3 installb nt2c' builds a dedicated environment for them).
    python_requires=">=3.8",
    packages=find_packages(include=["nt2c_core", "nt2c_core.*", "nt2c_scipion", "nt2c_scipion.*"]),
    package_data={
        "nt2c_core": ["data/*.pdb.gz", "data/*.pt", "data/*.json"],
        "nt2c_scipion": ["protocols.conf", "templates/*.json.template", "*.png"],
    },
    install_requires=SCIPION_REQUIRES + [f'{req}; python_version >= "3.10"' for req in CORE_REQUIRES],
    # test: scipion-em-relion so the facility template's RELION protocol classes resolve in its test;
    #       scipion-app for Scipion's installer (the isolated route's test); vermin checks that the
    #       plugin's import-time code runs on Python 3.8
    # tomo: Scipion's tomography objects, for the NMSG tomogram protocol (registered only when present)
    extras_require={"test": ["pytest", "scipion-em-relion", "scipion-app", "vermin"],
                    "tomo": ["scipion-em-tomo>=3.0"]},
    entry_points={
        "console_scripts": ["nt2c = nt2c_core.cli:main"],
        "pyworkflow.plugin": ["nt2c_scipion = nt2c_scipion"],
    },
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Bio-Informatics"],
)
