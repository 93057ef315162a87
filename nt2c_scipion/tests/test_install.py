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
PLUGIN_MODULES = (
    "nt2c_scipion",
    "nt2c_scipion.protocols",
    "nt2c_scipion.viewers",
    "nt2c_scipion.wizards",
    "nt2c_scipion.objects",
    "nt2c_scipion.bibtex",
)


def loaded_files() -> tuple:
    """(torch imported?, files of nt2c_core / nt2c_scipion) after importing the plugin in a fresh
    Python, as Scipion's GUI does when it builds its menus."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in PLUGIN_MODULES)
        + "import nt2c_core.validation\n"  # what the forms' settings objects use when validated
        + "import nt2c_core.io, nt2c_core.noise.extract, emtable\n"  # used by steps and the wizard there
        + "print('torch' in sys.modules)\n"
        + "for n, m in sorted(sys.modules.items()):\n"
        + "    if n.split('.')[0] in ('nt2c_core', 'nt2c_scipion') and getattr(m, '__file__', None):\n"
        + "        print(m.__file__)\n"
    )
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
            result = subprocess.run(
                [str(Path(sys.executable).parent / "vermin"), "-t=3.8-", "--no-tips", "--violations", *flags, *group],
                capture_output=True,
                text=True,
            )
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
        cls.variables = {
            NT2C_HOME_VAR: str(cls.home),
            NT2C_ROUTE_VAR: "isolated",
            NT2C_PYTHON_VAR: sys.executable,
            # the torch build already here (on CI: the CPU wheel on local disk), never a CUDA download
            NT2C_TORCH_VAR: "torch==" + torch.__version__.split("+")[0],
        }
        cls.Environment = Environment
        cls.sim = root / "simulated"
        config = SimulationConfig(
            Acquisition(pixel_size=2.0, dose=40.0),
            size=(256, 256),
            particles=8,
            defocus_um=(1.0, 2.5),
            count=2,
            seed=23,
        )
        simulate_dataset([PROTEASOME], config, cls.sim, progress=False)

    def setUp(self):
        patches = [mock.patch.dict(os.environ, self.variables), mock.patch.dict(Plugin._vars, self.variables)]
        for patch in patches:
            patch.start()
            self.addCleanup(patch.stop)

    def _denoise(self, model=None):
        from pwem.protocols import ProtImportMicrographs

        from nt2c_scipion.protocols import ProtNT2CDenoise

        imp = self.newProtocol(
            ProtImportMicrographs,
            filesPath=str(self.sim / "noisy"),
            filesPattern="*.mrc",
            samplingRate=2.0,
            voltage=300,
            sphericalAberration=2.7,
            amplitudeContrast=0.07,
        )
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
        check = subprocess.run(
            [
                str(self.home / "env" / "bin" / "python"),
                "-c",
                "import importlib.util as u, nt2c_core.denoise;"
                "print(u.find_spec('pyworkflow') is None, u.find_spec('torch') is not None)",
            ],
            capture_output=True,
            text=True,
        )
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
            self.assertEqual(
                Path(mic.getFileName()).name, f"{mic.getObjId():06d}_{Path(source.getFileName()).stem}.mrc"
            )
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
        imported = self.launchProtocol(
            self.newProtocol(ProtImportTomograms, filesPath=str(imports), filesPattern="*.mrc", samplingRate=10.0)
        )
        den = self.newProtocol(ProtNT2CDenoiseTomo, steps=120, learningRate=3e-3, tileSize=32, tileDepth=16, width=8)
        den.inputTomograms.set(imported)
        den.inputTomograms.setExtended(OUTPUT_NAME)
        self.assertEqual(den.validate(), [])
        self.launchProtocol(den)
        self.assertIn(f"{program} denoise-tomo", Path(den.getLogPaths()[0]).read_text())
        self.assertIn("--settings", Path(den.getLogPaths()[0]).read_text())  # the form's settings reach it
        from nt2c_core.settings import NMSGConfig, read_settings

        sent = read_settings(NMSGConfig, den._getExtraPath("denoise-tomo.settings.json"))
        self.assertEqual((sent.steps, sent.lr, sent.width, sent.flips), (120, 3e-3, 8, True))
        (tomo,) = list(den.outputTomograms)
        raw = getattr(imported, OUTPUT_NAME)[tomo.getObjId()]
        self.assertEqual(tomo.getTsId(), raw.getTsId())
        gain = psnr(read_mrc_volume(tomo.getFileName())[0], truths["tomo_a"]) - psnr(
            read_mrc_volume(raw.getFileName())[0], truths["tomo_a"]
        )
        self.assertGreater(gain, 0.5, f"{gain:.2f} dB")
        self.assertTrue(Path(tomo.getFileName()).with_suffix(".nmsg.pt").is_file())

    def test_particles_are_restored_through_the_environment(self):
        """A restorer trained by the training protocol and applied by the restore protocol, both on
        the isolated route: identity, CTF and alignment kept, the images improved."""
        import numpy as np

        from nt2c_core.data import APOFERRITIN
        from nt2c_scipion.protocols import ProtNT2CRestoreParticles, ProtNT2CTrainRestorer

        from .helpers import PARTICLE_ACQ, import_particles, particle_sqlite, restoration_gains

        program = self._environment()
        root = Path(self.proj.getPath()) / "particles"
        sqlite, truths = particle_sqlite(root, stacks=2, per_stack=8)
        particles = import_particles(self, sqlite)
        train = self.newProtocol(
            ProtNT2CTrainRestorer,
            structureFile=str(APOFERRITIN),
            count=400,
            dose=PARTICLE_ACQ.dose,
            steps=240,
            refineSteps=80,
            width=16,
            batchSize=8,
            learningRate=1e-3,
            seed=1,
        )
        train.inputSet.set(particles)
        self.assertEqual(train.validate(), [])
        self.launchProtocol(train)
        log = Path(train.getLogPaths()[0]).read_text()
        self.assertIn(f"{program} simulate-particles ", log)
        self.assertIn(f"{program} train-restorer ", log)
        self.assertEqual(
            (train.outputModel.getKind(), train.outputModel.getMetadata()["box"]), ("particle-restorer", 32)
        )
        restore = self.newProtocol(ProtNT2CRestoreParticles)
        restore.inputParticles.set(particles)
        restore.inputModel.set(train.outputModel)
        self.assertEqual(restore.validate(), [])
        self.launchProtocol(restore)
        self.assertIn(f"{program} restore-particles", Path(restore.getLogPaths()[0]).read_text())
        self.assertIn("--check-only", Path(restore.getLogPaths()[0]).read_text())  # the invention check
        self.assertIn("excess", restore._invention())
        out = restore.outputParticles
        self.assertSetSize(out, particles.getSize())
        self.assertTrue(out.hasCTF() and out.hasAlignmentProj())
        gains = restoration_gains(particles, out, truths)
        self.assertGreater(float(np.mean(gains)), 1.0, f"mean PSNR gain {np.mean(gains):.2f} dB")

    def test_training_protocols_run_through_the_environment(self):
        """Every training protocol on the isolated route: the stage's settings reach the
        environment's command line as a settings file (the coarse model's weights equal those of
        the in-process stage function with the form's settings), the chain from simulation to the
        fine model runs, and the one-click protocol runs 'nt2c run --stage' for each stage."""
        import torch

        from nt2c_core.data import APOFERRITIN
        from nt2c_core.models import load_model
        from nt2c_core.simulate import Acquisition, SimulationConfig
        from nt2c_core.simulate.experimental import make_experimental_dataset
        from nt2c_core.stages import train_coarse
        from nt2c_scipion.protocols import (
            ProtNT2C,
            ProtNT2CExtractNoise,
            ProtNT2CSimulate,
            ProtNT2CTrainCoarse,
            ProtNT2CTrainFine,
            ProtNT2CTrainNoiseGAN,
        )

        from .helpers import ONE_CLICK_TINY

        program = self._environment()
        data = Path(self.proj.getPath()) / "stages"
        make_experimental_dataset(
            [APOFERRITIN],
            SimulationConfig(Acquisition(pixel_size=2.5), size=(192, 192), particles=3, count=2, seed=4),
            data,
            progress=False,
        )
        from pwem.protocols import ProtImportMicrographs

        imp = self.launchProtocol(
            self.newProtocol(
                ProtImportMicrographs,
                filesPath=str(data / "raw"),
                filesPattern="*.mrc",
                samplingRate=2.5,
                voltage=300,
                sphericalAberration=2.7,
                amplitudeContrast=0.07,
            )
        )

        def run(cls, links, command, **values):
            prot = self.newProtocol(cls, **values)
            for attr, (source, output) in links.items():
                getattr(prot, attr).set(source)
                getattr(prot, attr).setExtended(output)
            self.assertEqual(prot.validate(), [])
            self.launchProtocol(prot)
            log = Path(prot.getLogPaths()[0]).read_text()
            self.assertIn(f"{program} {command} ", log)  # the step ran the environment's command line
            return prot, log

        sim, log = run(
            ProtNT2CSimulate,
            {"inputMicrographs": (imp, "outputMicrographs")},
            "simulate",
            structureFile=str(APOFERRITIN),
            count=4,
            size=128,
            particles=3,
        )
        self.assertSetSize(sim.outputNoisy, 4)
        self.assertAlmostEqual(sim.outputNoisy.getSamplingRate(), 2.5)
        pairs = {"inputNoisy": (sim, "outputNoisy"), "inputClean": (sim, "outputClean")}
        coarse, log = run(ProtNT2CTrainCoarse, pairs, "train", steps=6, crop=64, batchSize=2, width=8)
        self.assertIn("--settings", log)
        direct = Path(self.proj.getPath()) / "direct_coarse.pt"
        train_coarse(coarse._getExtraPath("pairs"), direct, coarse._trainConfig(), "cpu", progress=False)
        (env_net, env_meta), (direct_net, _) = load_model(coarse.outputModel.getFileName()), load_model(direct)
        for a, b in zip(env_net.state_dict().values(), direct_net.state_dict().values()):
            self.assertTrue(torch.equal(a, b))
        self.assertEqual((coarse.outputModel.getKind(), env_meta["stage"]), ("denoiser", "coarse"))
        self.assertAlmostEqual(coarse.outputModel.getPixelSize(), 2.5)

        noise, _ = run(
            ProtNT2CExtractNoise,
            {"inputMicrographs": (imp, "outputMicrographs"), "inputModel": (coarse, "outputModel")},
            "extract-noise",
            rule=1,
            patch=64,
            threshold=-0.99,
            minPatches=4,
        )
        self.assertSetSize(noise.outputNoisePatches, sum(noise._perMicrograph().values()))
        names = {m.getObjId(): m.getMicName() for m in imp.outputMicrographs}
        self.assertTrue(
            all(names[p.getCoordinate().getMicId()] == p.getCoordinate().getMicName() for p in noise.outputNoisePatches)
        )
        gan, _ = run(
            ProtNT2CTrainNoiseGAN,
            {"inputPatches": (noise, "outputNoisePatches")},
            "train-noise-gan",
            iterations=3,
            crop=64,
            batchSize=4,
            width=4,
        )
        self.assertEqual(gan.outputModel.getKind(), "noise-gan")
        fine, log = run(
            ProtNT2CTrainFine,
            {
                **pairs,
                "inputCoarse": (coarse, "outputModel"),
                "inputNoiseModel": (gan, "outputModel"),
                "inputMicrographs": (imp, "outputMicrographs"),
            },
            "train-fine",
            steps=4,
            crop=64,
            batchSize=2,
        )
        self.assertIn("--micrographs", log)
        meta = fine.outputModel.getMetadata()
        self.assertEqual((meta["stage"], meta["noise_model"], meta["training"]["steps"]), ("fine", "gan", 4))
        self.assertEqual(
            (meta["consistency"]["weight"], meta["consistency"]["micrographs"], meta["consistency"]["reference"]),
            (10.0, 2, "general"),
        )

        one, log = run(
            ProtNT2C,
            {"inputMicrographs": (imp, "outputMicrographs")},
            "run",
            structureFile=str(APOFERRITIN),
            **ONE_CLICK_TINY,
        )
        for stage in ("simulate", "coarse", "noise", "gan", "fine", "denoised"):
            self.assertIn(f"--stage {stage} ", log)
        self.assertSetSize(one.outputMicrographs, 2)
        self.assertEqual(one.outputModel.getMetadata()["stage"], "fine")

        # the viewer's and the wizard's previews denoise their crops through the environment
        import numpy as np

        from nt2c_core.denoise import Denoiser
        from nt2c_scipion.viewers.viewer_training import raw_coarse_fine
        from nt2c_scipion.wizards import threshold_preview

        with mock.patch.object(Denoiser, "from_file", side_effect=AssertionError("torch used in the GUI")):
            raw, coarse_crop, fine_crop, _ = raw_coarse_fine(one, 0)
            _, found = threshold_preview(noise)
        expected = Denoiser.from_file(one._getExtraPath("work", "coarse", "model.pt")).denoise(raw)
        self.assertTrue(np.allclose(coarse_crop, expected, atol=1e-4 * float(expected.std())))
        self.assertEqual(len(found.origins), len(found.all_origins))  # threshold -0.99 keeps every tile


class TestPluginManagerLookup(unittest.TestCase):
    """The fast half of `make scipion-check` (which runs `scipion3 installp -p CHECKOUT --devel` and
    `uninstallp` for real): scipion-app's own plugin manager finds this installed distribution's
    plugin module. It takes the first line of top_level.txt in an editable install (setuptools
    sorts the names, which put nt2c_core first: KeyError 'nt2c_core'), and checks for
    site-packages/scipion_em_nt2c* when the checkout has a pyproject.toml (else scipion-em-nt2c*,
    which pip no longer writes)."""

    def test_scipion_app_finds_the_plugin_module_of_the_distribution(self):
        try:
            import scipion.install.plugin_funcs  # noqa: F401
        except ImportError:
            self.skipTest("scipion-app (the test extra) is not installed")
        # as Scipion runs: away from the checkout, and in it (where the checkout's own *.egg-info, whose
        # SOURCES.txt lists its files, is the distribution found first)
        code = (
            "import importlib.metadata as m, json\n"
            "from scipion.install.plugin_funcs import PluginInfo\n"
            "d = m.distribution('scipion-em-nt2c')\n"
            "p = PluginInfo(pipName='scipion-em-nt2c', name='scipion-em-nt2c', remote=False)\n"
            "print(json.dumps([(d.read_text('top_level.txt') or '').split(), p.getDirName(), p.getPipVersion(), "
            "d.version, str(d.locate_file(''))]))\n"
        )
        import json

        checkout = Path(__file__).resolve().parents[2]
        self.assertTrue((checkout / "pyproject.toml").is_file())
        for cwd in ("/", str(checkout)):
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)
            self.assertEqual(done.returncode, 0, done.stderr[-2000:])
            top, dirname, version, dist_version, site = json.loads(done.stdout.strip().splitlines()[-1])
            self.assertEqual((top[0], dirname), ("nt2c_scipion", "nt2c_scipion"), f"from {cwd}")
            self.assertEqual(version, dist_version)
            if cwd == "/":
                self.assertTrue(list(Path(site).glob("scipion_em_nt2c*")), f"{site}: no scipion_em_nt2c*")
