"""Installing the plugin in a real Scipion: the plugin's import-time code runs on Python 3.8 without
torch, and the isolated route -- ``scipion3 installb nt2c`` builds a dedicated pip environment from
this checkout with Scipion's own installer, and the denoise protocol runs its ``nt2c`` -- works."""

import os
import subprocess
import sys
import unittest
from pathlib import Path
from unittest import mock

from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_scipion import Plugin
from nt2c_scipion.constants import NT2C_HOME_VAR, NT2C_PYTHON_VAR, NT2C_ROUTE_VAR, NT2C_TORCH_VAR

# Everything Scipion imports when it loads the plugin's menus, forms, viewers and wizards
PLUGIN_MODULES = ("nt2c_scipion", "nt2c_scipion.protocols", "nt2c_scipion.viewers", "nt2c_scipion.wizards",
                  "nt2c_scipion.objects", "nt2c_scipion.bibtex")


def loaded_files() -> tuple:
    """(torch imported?, files of nt2c_core / nt2c_scipion) after importing the plugin in a fresh
    Python, as Scipion's GUI does when it builds its menus."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in PLUGIN_MODULES)
            + "import nt2c_core.validation\n"  # what the forms' settings objects use when validated
            + "print('torch' in sys.modules)\n"
            + "for n, m in sorted(sys.modules.items()):\n"
            + "    if n.split('.')[0] in ('nt2c_core', 'nt2c_scipion') and getattr(m, '__file__', None):\n"
            + "        print(m.__file__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", out[1:]


class TestPluginImport(unittest.TestCase):
    def test_plugin_loads_without_torch_and_its_code_runs_on_python_38(self):
        """Scipion's environment may run Python 3.8 (pyworkflow's minimum): what the plugin imports
        at load time must parse and run there. vermin checks syntax, standard-library use and
        (where annotations are evaluated, i.e. without ``from __future__ import annotations``)
        builtin generics such as list[int]."""
        torch_loaded, files = loaded_files()
        self.assertFalse(torch_loaded, "loading the plugin imported torch")
        lazy = [f for f in files if "from __future__ import annotations" in Path(f).read_text()]
        evaluated = [f for f in files if f not in lazy]
        self.assertGreater(len(files), 20)
        for group, flags in ((lazy, []), (evaluated, ["--eval-annotations"])):
            result = subprocess.run([str(Path(sys.executable).parent / "vermin"), "-t=3.8-", "--no-tips", "--violations",
                                     *flags, *group], capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_route_variable_chooses_and_a_forced_route_that_cannot_run_says_so(self):
        import nt2c_scipion

        with mock.patch.dict(os.environ, {NT2C_ROUTE_VAR: "in-process"}):
            self.assertTrue(Plugin.coreInProcess())
            self.assertEqual(Plugin.validateCore(), [])  # torch and the core import here
            with mock.patch.object(nt2c_scipion, "_core_imports", lambda: False):  # as on Python 3.8
                errors = Plugin.validateCore()
            self.assertTrue(errors and "NT2C_ROUTE=in-process" in errors[0], errors)
        missing = {NT2C_ROUTE_VAR: "isolated", NT2C_HOME_VAR: "/nonexistent/nt2c-env"}
        with mock.patch.dict(os.environ, missing), mock.patch.dict(Plugin._vars, missing):
            self.assertFalse(Plugin.coreInProcess())
            errors = Plugin.validateCore()
            self.assertTrue(errors and "scipion3 installb nt2c" in errors[0] and "/nonexistent/nt2c-env" in errors[0])

    def test_core_requirements_come_from_setup_and_skip_scipion_and_torch(self):
        reqs = Plugin.coreRequirements()
        names = {r.split(">")[0].split("=")[0] for r in reqs}
        self.assertTrue({"mrcfile", "numpy", "gemmi", "scipy", "starfile", "scikit-image"} <= names, reqs)
        self.assertFalse([r for r in reqs if r.startswith(("scipion", "torch", "pytest", "vermin"))], reqs)
        command = Plugin.installCommand()
        self.assertIn("-m venv env", command)
        self.assertIn("--no-deps", command)
        self.assertNotIn("conda", command)


class TestIsolatedRoute(BaseTest):
    """The route Scipion installations whose Python cannot run nt2c_core take."""

    @classmethod
    def setUpClass(cls):
        try:
            from scipion.install.funcs import Environment  # scipion-app: what 'scipion3 installb' runs
        except ImportError:
            raise unittest.SkipTest("scipion-app (the test extra) is not installed")
        import torch

        from nt2c_core.data import PROTEASOME
        from nt2c_core.simulate import Acquisition, SimulationConfig, simulate_dataset

        setupTestProject(cls)
        root = Path(cls.proj.getPath())
        cls.em_root = root / "software-em"  # never the installation's own software/em
        from nt2c_core import __version__

        cls.home = cls.em_root / f"nt2c-{__version__}"
        cls.variables = {NT2C_HOME_VAR: str(cls.home), NT2C_ROUTE_VAR: "isolated",
                         NT2C_PYTHON_VAR: sys.executable,
                         # the torch build already here (on CI: the CPU wheel on local disk), never a CUDA download
                         NT2C_TORCH_VAR: "torch==" + torch.__version__.split("+")[0]}
        cls.Environment = Environment
        cls.sim = root / "simulated"
        config = SimulationConfig(Acquisition(pixel_size=2.0, dose=40.0), size=(256, 256), particles=8,
                                  defocus_um=(1.0, 2.5), count=2, seed=23)
        simulate_dataset([PROTEASOME], config, cls.sim, progress=False)

    def setUp(self):
        patches = [mock.patch.dict(os.environ, self.variables), mock.patch.dict(Plugin._vars, self.variables)]
        for patch in patches:
            patch.start()
            self.addCleanup(patch.stop)

    def _denoise(self, model=None):
        from pwem.protocols import ProtImportMicrographs

        from nt2c_scipion.protocols import ProtNT2CDenoise

        imp = self.newProtocol(ProtImportMicrographs, filesPath=str(self.sim / "noisy"), filesPattern="*.mrc",
                               samplingRate=2.0, voltage=300, sphericalAberration=2.7, amplitudeContrast=0.07)
        self.launchProtocol(imp)
        den = self.newProtocol(ProtNT2CDenoise, useGeneralModel=model is None, streamingSleepOnWait=1)
        den.inputMicrographs.set(imp)
        den.inputMicrographs.setExtended("outputMicrographs")
        if model is not None:
            den.inputModel.set(model)
            den.inputModel.setExtended("outputModel")
        return imp, den

    def _environment(self) -> Path:
        """'scipion3 installb nt2c' with Scipion's own installer, into the test's software/em (once
        per class); returns the environment's nt2c."""
        import pwem

        program = self.home / "env" / "bin" / "nt2c"
        if not program.is_file():
            env = self.Environment(args=["nt2c"])
            with mock.patch.object(pwem.Config, "EM_ROOT", str(self.em_root)):
                Plugin.defineBinaries(env)
                env.execute()
        self.assertTrue(program.is_file(), f"{program} not built")
        self.assertEqual(Plugin.getProgram(), str(program))
        return program

    def test_without_the_environment_the_form_says_how_to_install_it(self):
        missing = {NT2C_HOME_VAR: str(self.em_root / "nt2c-not-installed")}
        with mock.patch.dict(os.environ, missing), mock.patch.dict(Plugin._vars, missing):
            _, den = self._denoise()
            errors = den.validate()
        self.assertTrue(any("scipion3 installb nt2c" in e and "nt2c-not-installed" in e for e in errors), errors)

    def test_installb_builds_the_environment_and_denoise_runs_through_it(self):
        from nt2c_core.io import read_mrc
        from nt2c_core.metrics import psnr

        program = self._environment()
        # the environment holds nt2c_core and torch, and no Scipion
        check = subprocess.run([str(self.home / "env" / "bin" / "python"), "-c",
                                "import importlib.util as u, nt2c_core.denoise;"
                                "print(u.find_spec('pyworkflow') is None, u.find_spec('torch') is not None)"],
                               capture_output=True, text=True)
        self.assertEqual(check.stdout.split(), ["True", "True"], check.stderr)

        # a model imported on this route is checked by the environment's 'nt2c model-info'
        from nt2c_core.data import GENERAL_MODEL
        from nt2c_scipion.protocols import ProtNT2CImportModel

        bad = self.newProtocol(ProtNT2CImportModel, modelFile=str(self.sim / "params.json"))
        self.assertTrue(bad.validate() and "params.json" in bad.validate()[0], bad.validate())
        model = self.newProtocol(ProtNT2CImportModel, modelFile=str(GENERAL_MODEL))
        self.assertEqual(model.validate(), [])
        self.launchProtocol(model)
        self.assertEqual(model.outputModel.getKind(), "denoiser")
        self.assertIn(f"{program} model-info", Path(model.getLogPaths()[0]).read_text())

        imp, den = self._denoise(model)
        self.assertEqual(den.validate(), [])
        self.launchProtocol(den)
        self.assertSetSize(den.outputMicrographs, 2)
        log = Path(den.getLogPaths()[0]).read_text()
        self.assertIn(f"{program} denoise --model", log)  # the step ran the dedicated environment's command line
        for mic in den.outputMicrographs:
            source = imp.outputMicrographs[mic.getObjId()]
            self.assertEqual(mic.getMicName(), source.getMicName())
            self.assertEqual(Path(mic.getFileName()).name, f"{mic.getObjId():06d}_{Path(source.getFileName()).stem}.mrc")
            clean = read_mrc(self.sim / "clean" / Path(source.getFileName()).name)[0]
            gain = psnr(read_mrc(mic.getFileName())[0], clean) - psnr(read_mrc(source.getFileName())[0], clean)
            self.assertGreater(gain, 1.0, f"{mic.getMicName()}: {gain:.2f} dB")

    def test_tomograms_are_denoised_through_the_environment(self):
        try:
            from tomo.protocols import ProtImportTomograms
            from tomo.protocols.protocol_import_tomograms import OUTPUT_NAME
        except ImportError:
            self.skipTest("scipion-em-tomo (the package's tomo extra) is not installed")
        from nt2c_core.io import read_mrc_volume
        from nt2c_core.metrics import psnr
        from nt2c_scipion.protocols import ProtNT2CDenoiseTomo

        from .helpers import simulated_tomograms

        program = self._environment()
        imports, truths = simulated_tomograms(Path(self.proj.getPath()) / "tomo", names=("tomo_a",))
        imported = self.launchProtocol(self.newProtocol(ProtImportTomograms, filesPath=str(imports),
                                                        filesPattern="*.mrc", samplingRate=10.0))
        den = self.newProtocol(ProtNT2CDenoiseTomo, steps=120, learningRate=3e-3, tileSize=32, tileDepth=16, width=8)
        den.inputTomograms.set(imported)
        den.inputTomograms.setExtended(OUTPUT_NAME)
        self.assertEqual(den.validate(), [])
        self.launchProtocol(den)
        self.assertIn(f"{program} denoise-tomo", Path(den.getLogPaths()[0]).read_text())
        self.assertIn("--steps 120", Path(den.getLogPaths()[0]).read_text())  # the form's settings reach it
        (tomo,) = list(den.outputTomograms)
        raw = getattr(imported, OUTPUT_NAME)[tomo.getObjId()]
        self.assertEqual(tomo.getTsId(), raw.getTsId())
        gain = psnr(read_mrc_volume(tomo.getFileName())[0], truths["tomo_a"]) - \
            psnr(read_mrc_volume(raw.getFileName())[0], truths["tomo_a"])
        self.assertGreater(gain, 0.5, f"{gain:.2f} dB")
        self.assertTrue(Path(tomo.getFileName()).with_suffix(".nmsg.pt").is_file())

    def test_particles_are_restored_through_the_environment(self):
        """A restorer trained here (in-process core), imported and applied on the isolated route:
        identity, CTF and alignment kept, the images improved."""
        import numpy as np

        from nt2c_core.data import APOFERRITIN
        from nt2c_core.particles.simulate import simulate_particles
        from nt2c_core.particles.sr3 import save_restorer, train_restorer
        from nt2c_core.settings import ParticleSimulationConfig, RestorerConfig
        from nt2c_core.simulate.structure import load_structure
        from nt2c_scipion.protocols import ProtNT2CImportModel, ProtNT2CRestoreParticles

        from .helpers import PARTICLE_ACQ, import_particles, particle_sqlite, restoration_gains

        program = self._environment()
        root = Path(self.proj.getPath()) / "particles"
        sqlite, truths = particle_sqlite(root, stacks=2, per_stack=8)
        tiny = RestorerConfig(steps=240, batch_size=8, width=16, refine_steps=80, refine_width=8, refine_pool=64,
                              lr=1e-3, log_every=40, checkpoint_every=40, batch=32)
        train = simulate_particles([load_structure(APOFERRITIN)],
                                   ParticleSimulationConfig(PARTICLE_ACQ, box=32, count=400, seed=1), progress=False)
        restorer = save_restorer(root / "restorer.pt", train_restorer(train.noisy, train.clean, tiny, progress=False),
                                 tiny, PARTICLE_ACQ.pixel_size, 32, {"test": True})
        particles = import_particles(self, sqlite)
        model = self.launchProtocol(self.newProtocol(ProtNT2CImportModel, modelFile=str(restorer)))
        restore = self.newProtocol(ProtNT2CRestoreParticles)
        restore.inputParticles.set(particles)
        restore.inputModel.set(model.outputModel)
        self.assertEqual(restore.validate(), [])
        self.launchProtocol(restore)
        self.assertIn(f"{program} restore-particles", Path(restore.getLogPaths()[0]).read_text())
        out = restore.outputParticles
        self.assertSetSize(out, particles.getSize())
        self.assertTrue(out.hasCTF() and out.hasAlignmentProj())
        gains = restoration_gains(particles, out, truths)
        self.assertGreater(float(np.mean(gains)), 1.0, f"mean PSNR gain {np.mean(gains):.2f} dB")

    def test_protocols_without_a_command_line_route_say_so(self):
        from nt2c_scipion.protocols import ProtNT2CSimulate

        errors = self.newProtocol(ProtNT2CSimulate)._validateRoute()
        self.assertTrue(errors and "Python >= 3.10 with torch" in errors[0], errors)
