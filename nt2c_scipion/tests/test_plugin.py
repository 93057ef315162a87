"""The plugin registers with Scipion when the package is pip-installed."""

import unittest
from pathlib import Path
from unittest import mock

import pyworkflow as pw


class TestPlugin(unittest.TestCase):
    def test_plugin_is_discovered_by_scipion_domain(self):
        import pwem

        import nt2c_scipion

        plugins = pw.Config.getDomain().getPlugins()
        assert "nt2c_scipion" in plugins
        assert issubclass(nt2c_scipion.Plugin, pwem.Plugin)
        assert nt2c_scipion.Plugin.getVar("NT2C_DEVICE") in ("auto", "cpu", "cuda")

    def test_each_step_runs_on_the_gpu_its_executor_thread_booked(self):
        """Scipion's ThreadStepExecutor books one GPU slot per step thread; a protocol's steps must
        use that GPU, not the first of the protocol's list. CUDA is faked present: no GPU needed."""
        import torch
        from pyworkflow.protocol.executor import ThreadStepExecutor

        from nt2c_core.device import choose_device
        from nt2c_scipion.protocols import ProtNT2CDenoise

        executor = ThreadStepExecutor(None, 3, gpuList=[0, 1])
        prot = ProtNT2CDenoise()
        prot.setStepsExecutor(executor)
        patch = mock.patch.object(torch.cuda, "is_available", lambda: True)
        patch.start()
        self.addCleanup(patch.stop)

        class FakeStepThread:
            def __init__(self, th_id):
                self.thId = th_id

            def needsGPU(self):
                return True

        devices = []
        for th_id in (1, 2, 1):
            with mock.patch.object(executor, "getCurrentStepThread", lambda t=th_id: FakeStepThread(t)):
                devices.append(prot._device())
        assert devices == ["cuda:0", "cuda:1", "cuda:0"]  # two threads, two GPUs, a thread keeps its GPU

        assert choose_device(True, False, [1], [0]) == "cpu"  # no CUDA: CPU fallback
        assert choose_device(False, True, [1], [0]) == "cpu"  # GPU switched off in the form
        assert choose_device(True, True, [], [3]) == "cuda:3"  # no executor slot: protocol's list
        assert choose_device(True, True, [2], [0], wanted="cpu") == "cpu"  # NT2C_DEVICE=cpu wins

    def test_plugin_takes_its_names_from_the_core_and_copies_nothing(self):
        """Menus and forms read nt2c_core.settings (torch-free); the names there match the modules
        that use them."""
        from nt2c_core.settings import DETECTORS, NOISE_LEVELS, RULES, STAGES
        from nt2c_core.simulate import detector
        from nt2c_scipion.protocols import protocol_base, protocol_nt2c

        assert set(DETECTORS) == set(detector.DETECTORS)
        assert protocol_base.DETECTOR_CHOICES == list(DETECTORS) and protocol_nt2c.STAGES is STAGES
        assert RULES == ("mask", "ssim") and NOISE_LEVELS == ("real", "simulated")
        plugin_sources = "".join(p.read_text() for p in Path(protocol_base.__file__).parent.glob("*.py"))
        for literal in (
            '"simulate", "coarse", "noise"',
            '("mask", "ssim")',
            '"real", "simulated"',
            '"model.pt"',
            '"DONE.json"',
            '"selection.json"',
        ):
            assert literal not in plugin_sources, literal

    def test_citations_are_complete_and_protocols_marked_beta(self):
        from pyworkflow.utils import parseBibTex

        import nt2c_scipion.bibtex
        import nt2c_scipion.protocols as protocols

        entries = parseBibTex(nt2c_scipion.bibtex.__doc__)
        assert {"Li2022NT2C", "Yang2024SaID", "Yang2024NMSG"} <= set(entries)
        said = entries["Yang2024SaID"]
        assert said["doi"] == "10.1089/cmb.2024.0513" and "others" not in said["author"]
        assert said["author"].count(" and ") == 4  # five authors
        for name in protocols.__all__:
            assert getattr(protocols, name).isBeta(), name

    def test_scipions_runner_lists_and_runs_the_plugin_tests(self):
        """Scipion's own runner (pyworkflow's pw_run_tests, behind 'scipion3 tests') discovers every
        test module of the plugin, and runs a test class by name."""
        import subprocess
        import sys

        runner = Path(pw.__file__).parent / "apps" / "pw_run_tests.py"
        listed = subprocess.run(
            [sys.executable, str(runner), "--show", "--grep", "nt2c_scipion", "--mode", "classes"],
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
        modules = sorted(p.stem for p in Path(__file__).parent.glob("test_*.py"))
        self.assertGreaterEqual(len(modules), 10)
        for module in modules:
            self.assertIn(f"nt2c_scipion.tests.{module}", listed)
        one = "nt2c_scipion.tests.test_plugin.TestPlugin.test_plugin_is_discovered_by_scipion_domain"
        ran = subprocess.run([sys.executable, str(runner), one], capture_output=True, text=True, timeout=300)
        self.assertIn("PASSED", ran.stdout + ran.stderr)
        self.assertIn("1 tests", ran.stdout + ran.stderr)
