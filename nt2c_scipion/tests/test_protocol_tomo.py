"""The NMSG tomogram protocol in a real headless Scipion project (scipion-em-tomo installed by
`make test` through the package's tomo extra): import simulated tomograms, denoise, check identity
(objId, tsId, sampling, acquisition), quality against the ground truth, the saved model route, the
viewer figure and the menu entry."""

import json
import unittest
from pathlib import Path

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_core.io import read_mrc_volume
from nt2c_core.metrics import psnr
from nt2c_core.settings import NMSG

from .helpers import menu_views, protocol_places, simulated_tomograms

try:  # the tomography extra (scipion-em-tomo); the plugin registers its tomogram protocol only with it
    from tomo.protocols import ProtImportTomograms
    from tomo.protocols.protocol_import_tomograms import OUTPUT_NAME

    from nt2c_scipion.protocols import ProtNT2CDenoiseTomo
    from nt2c_scipion.viewers.viewer_tomo import tomo_pair_for
except ImportError:
    ProtImportTomograms = None
NO_TOMO = "scipion-em-tomo (the package's tomo extra) is not installed"

TINY = dict(steps=120, learningRate=3e-3, tileSize=32, tileDepth=16, width=8, smoothWeight=0.0, guideWeight=0.0)


@unittest.skipIf(ProtImportTomograms is None, NO_TOMO)
class TestNT2CDenoiseTomo(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.imports, cls.truths = simulated_tomograms(Path(cls.proj.getPath()) / "tomo")

    def _import(self):
        prot = self.newProtocol(
            ProtImportTomograms, filesPath=str(self.imports), filesPattern="*.mrc", samplingRate=10.0
        )
        self.launchProtocol(prot)
        return prot

    def _denoise(self, imported, **kwargs):
        prot = self.newProtocol(ProtNT2CDenoiseTomo, **{**TINY, **kwargs})
        prot.inputTomograms.set(imported)
        prot.inputTomograms.setExtended(OUTPUT_NAME)
        return prot

    def test_form_defaults_are_the_core_defaults(self):
        prot = self.newProtocol(ProtNT2CDenoiseTomo)
        config = prot._config()
        assert config == NMSG
        for param_name, param in prot._definition.iterAllParams():
            assert param.help.get(), f"{param_name} has no help text"

    def test_denoise_keeps_identity_and_improves_psnr(self):
        imported = self._import()
        prot = self.launchProtocol(self._denoise(imported))
        out, inp = prot.outputTomograms, getattr(imported, OUTPUT_NAME)
        self.assertSetSize(out, 2)
        self.assertAlmostEqual(out.getSamplingRate(), 10.0)
        for tomo in out:
            raw = inp[tomo.getObjId()]
            self.assertEqual(tomo.getTsId(), raw.getTsId())
            self.assertAlmostEqual(tomo.getSamplingRate(), 10.0)
            self.assertTrue(Path(tomo.getFileName()).name.startswith(f"{tomo.getObjId():04d}_"))
            truth = self.truths[Path(raw.getFileName()).stem]
            den, voxel = read_mrc_volume(tomo.getFileName())
            self.assertAlmostEqual(voxel, 10.0, places=3)
            gain = psnr(den, truth) - psnr(read_mrc_volume(raw.getFileName())[0], truth)
            self.assertGreater(gain, 1.0, f"{tomo.getTsId()}: NMSG gained only {gain:.2f} dB")
        summary = "\n".join(prot._summary())
        self.assertIn("Denoised 2 tomograms", summary)
        self.assertEqual(prot._citations(), ["Yang2024NMSG"])
        # the viewer's figure, headless
        from nt2c_core.tomo.figures import slices_figure

        raw, den, name = tomo_pair_for(prot, 0)
        fig = slices_figure([raw, den], ["raw", "NMSG"], name)
        path = Path(self.proj.getPath()) / "tomo_viewer.png"
        fig.savefig(path)
        self.assertGreater(path.stat().st_size, 10000)
        # a saved model applied to the set: same output as the training run gave
        first = next(iter(out.iterItems(orderBy="id")))
        info = json.loads(Path(prot._getExtraPath(f"{first.getObjId():04d}.json")).read_text())
        apply = self._denoise(imported, modelSource=1, modelFile=info["model"])
        self.assertEqual(apply.validate(), [])
        apply = self.launchProtocol(apply)
        again = read_mrc_volume(apply.outputTomograms[first.getObjId()].getFileName())[0]
        self.assertTrue(np.allclose(again, read_mrc_volume(first.getFileName())[0], atol=1e-4))

    def test_invalid_settings_and_models_are_named_before_running(self):
        imported = self._import()
        errors = self._denoise(imported, tileSize=30).validate()
        self.assertTrue(any("must be a multiple of 8" in e for e in errors), errors)
        fake = Path(self.proj.getPath()) / "fake.pt"
        fake.write_text("not a model")
        errors = self._denoise(imported, modelSource=1, modelFile=str(fake)).validate()
        self.assertTrue(any("fake.pt" in e for e in errors), errors)


@unittest.skipIf(ProtImportTomograms is None, NO_TOMO)
class TestTomoMenu(unittest.TestCase):
    def test_tomogram_protocol_sits_in_the_tomography_menu(self):
        views = menu_views()
        self.assertIn("Tomography", views)
        self.assertEqual(
            list(protocol_places(views["Tomography"])), [("ProtNT2CDenoiseTomo", ("Tomograms", "Denoise", "default"))]
        )
