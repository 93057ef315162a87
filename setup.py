"""scipion-em-nt2c: Noise-Transfer2Clean cryo-EM micrograph denoising for Scipion."""

import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.egg_info import egg_info

PLUGIN = "nt2c_scipion"


class PluginFirstEggInfo(egg_info):
    """egg_info that lists the Scipion plugin first. Scipion's plugin manager (scipion-app's
    PluginInfo.getDirName) takes the plugin's module from the first line of top_level.txt (an
    editable install) or from the first __init__.py among the distribution's files (SOURCES.txt
    when the checkout's own egg-info is found, e.g. running scipion3 from the checkout), and
    setuptools sorts both, so nt2c_core would come first (KeyError 'nt2c_core')."""

    def run(self):
        super().run()
        folder = Path(self.egg_info)
        top = folder / "top_level.txt"
        if top.exists():
            names = [n for n in top.read_text().split() if n]
            if PLUGIN in names:
                top.write_text("\n".join([PLUGIN] + [n for n in names if n != PLUGIN]) + "\n")
        sources = folder / "SOURCES.txt"
        if sources.exists():
            lines = [line for line in sources.read_text().splitlines() if line]
            first = [line for line in lines if line.startswith(PLUGIN + "/")]
            sources.write_text("\n".join(first + [line for line in lines if line not in first]) + "\n")


HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "nt2c_core" / "__init__.py").read_text()).group(1)

# pyworkflow 3.11.1: ProtStreamingBase's streaming form and per-step needsGPU / GPU booking
SCIPION_REQUIRES = ["scipion-pyworkflow>=3.11.1", "scipion-em>=3.10.0"]
# nt2c_core's requirements: also what 'scipion3 installb nt2c' installs in the dedicated environment
# (torch there from the NT2C_TORCH variable). Any torch >= 2.1 works; install the build for your
# machine (CPU or CUDA) first.
CORE_REQUIRES = [
    "torch>=2.1",
    "mrcfile",
    "numpy",
    "scikit-image",
    "gemmi>=0.6",
    "scipy",
    "starfile>=0.5",
    "pandas",
    "tqdm",
    "matplotlib",
]

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
    #       plugin's import-time code runs on Python 3.8; ruff (pinned: its format is the style) lints in .ci/run
    # tomo: Scipion's tomography objects, for the NMSG tomogram protocol (registered only when present)
    extras_require={
        "test": ["pytest", "scipion-em-relion", "scipion-app", "vermin", "ruff==0.17.6"],
        "tomo": ["scipion-em-tomo>=3.0"],
    },
    entry_points={
        "console_scripts": ["nt2c = nt2c_core.cli:main"],
        "pyworkflow.plugin": ["nt2c_scipion = nt2c_scipion"],
    },
    cmdclass={"egg_info": PluginFirstEggInfo},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Bio-Informatics"],
)
