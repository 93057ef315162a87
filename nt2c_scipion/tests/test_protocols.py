"""The plugin in real Scipion projects (sqlite, protocols run as Scipion runs them): discovery,
import model -> denoise chain, streaming, template, viewer, bad input."""

import os
import shutil
import time
import unittest
from pathlib import Path

import numpy as np
import pyworkflow as pw
from pwem.objects import Coordinate, Micrograph, SetOfCoordinates, SetOfMicrographs
from pwem.protocols import ProtImportCoordinates, ProtImportMicrographs
from pyworkflow.object import Set
from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_core.evaluation.picking import pick_blobs, score_picks
from nt2c_core.io import read_mrc, read_mrc_labels, read_star, write_mrc
from nt2c_core.metrics import psnr
from nt2c_scipion.protocols import ProtNT2CDenoise, ProtNT2CImportModel
from nt2c_scipion.viewers.viewer_denoise import comparison_figure, pair_for

from .helpers import menu_views, protocol_places, trained_denoiser

PLUGIN_DIR = Path(__file__).resolve().parents[1]


class TestDiscovery(unittest.TestCase):
    def test_every_protocol_viewer_and_menu_entry_is_discovered(self):
        domain = pw.Config.getDomain()
        import nt2c_scipion.protocols

        protocols = set(nt2c_scipion.protocols.__all__)
        assert protocols <= set(domain.getProtocols())
        assert {
            "NT2CDenoiseViewer",
            "NT2CTrainingViewer",
            "NT2CStageViewer",
            "NT2CRestoreViewer",
            "NT2CRestorerTrainingViewer",
        } <= set(domain.getViewers())
        assert {"NT2CNoisePatchWizard", "NT2CThresholdWizard"} <= set(domain.getWizards())
        assert "NT2CModel" in domain.getObjects()
        logo = ProtNT2CDenoise.getPluginLogoPath()  # registered by getProtocols() above
        assert logo and Path(logo).is_file() and logo.endswith(".png")
        conf = (PLUGIN_DIR / "protocols.conf").read_text()
        for name in protocols:
            assert f'"value": "{name}"' in conf and name in domain.getProtocols()

    def test_protocols_sit_in_the_spa_menu_as_the_gui_loads_it(self):
        """The GUI merges each plugin's protocols.conf into Scipion's views; NT2C must appear in the
        single-particle view ("Protocols SPA") under Micrographs > Denoising, not in a view of its own."""
        import nt2c_scipion.protocols

        views = menu_views()
        places = {(name, path[:2]) for name, path in protocol_places(views["Protocols SPA"])}
        particles = {"ProtNT2CRestoreParticles", "ProtNT2CTrainRestorer", "ProtNT2CImportModel"}
        assert {name for name, _ in places} == set(nt2c_scipion.protocols.__all__) - set(
            nt2c_scipion.protocols.TOMO_PROTOCOLS
        )
        assert {name for name, where in places if where == ("Micrographs", "Denoising")} == {
            name for name, _ in places
        } - (particles - {"ProtNT2CImportModel"})
        assert {name for name, where in places if where == ("Particles", "Denoising")} == particles
        assert {where for _, where in places} == {("Micrographs", "Denoising"), ("Particles", "Denoising")}
        assert not [v for v in views if "Single" in v or "NT2C" in v]  # no stray view of our own

    def test_every_form_parameter_has_help(self):
        import nt2c_scipion.protocols as protocols

        missing = []
        for name in protocols.__all__:
            for pname, param in getattr(protocols, name)().getDefinition().iterAllParams():
                if type(param).__name__ not in ("Section", "Line", "Group", "LabelParam") and not param.help.get():
                    missing.append(f"{name}.{pname}")
        assert not missing, missing


def simulated(cls):
    """The shared coarse model and its held-out simulated micrographs (trained once per process)."""
    root, result = trained_denoiser()
    cls.sim = root / "test"
    cls.model_path = str(result.model_path)


class TestNT2CDenoise(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        simulated(cls)

    def _import_mics(self, folder, pixel=2.0, streaming=False, **kwargs):
        prot = self.newProtocol(
            ProtImportMicrographs,
            filesPath=str(folder),
            filesPattern="*.mrc",
            samplingRate=pixel,
            voltage=300,
            sphericalAberration=2.7,
            amplitudeContrast=0.07,
            dataStreaming=streaming,
            **kwargs,
        )
        return prot

    def _import_model(self, path=None):
        prot = self.newProtocol(ProtNT2CImportModel, modelFile=path or self.model_path)
        return self.launchProtocol(prot)

    def _denoise(self, mics_prot, model_prot, **kwargs):
        prot = self.newProtocol(
            ProtNT2CDenoise, numberOfThreads=3, streamingSleepOnWait=1, useGeneralModel=False, **kwargs
        )
        prot.inputMicrographs.set(mics_prot)
        prot.inputMicrographs.setExtended("outputMicrographs")
        prot.inputModel.set(model_prot)
        prot.inputModel.setExtended("outputModel")
        return prot

    def test_chain_keeps_identity_and_improves_psnr(self):
        mics = self.launchProtocol(self._import_mics(self.sim / "noisy"))
        model = self._import_model()
        self.assertIn("Validation PSNR", "\n".join(model._summary()))
        den = self.launchProtocol(self._denoise(mics, model))
        out, inp = den.outputMicrographs, mics.outputMicrographs
        self.assertSetSize(out, 4)
        self.assertFalse(out.isStreamOpen())
        self.assertAlmostEqual(out.getSamplingRate(), 2.0)
        self.assertEqual(out.getAcquisition().getVoltage(), 300)
        gains = []
        for mic in out:
            raw = inp[mic.getObjId()]
            self.assertEqual(mic.getMicName(), raw.getMicName())
            self.assertTrue(os.path.exists(mic.getFileName()))
            self.assertEqual(Path(mic.getFileName()).name, f"{mic.getObjId():06d}_{Path(raw.getFileName()).stem}.mrc")
            labels = " ".join(read_mrc_labels(mic.getFileName()))
            self.assertIn("model-sha256=", labels)
            self.assertIn(f"model={Path(model.outputModel.getFileName()).name} kind=denoiser arch=unet", labels)
            clean, _ = read_mrc(self.sim / "clean" / Path(raw.getFileName()).name)
            gains.append(psnr(read_mrc(mic.getFileName())[0], clean) - psnr(read_mrc(raw.getFileName())[0], clean))
        self.assertGreater(min(gains), 2.0)
        # the viewer's figure, headless
        raw_img, den_img, name = pair_for(den, 0)
        fig = comparison_figure(raw_img, den_img, name, zoom=128)
        path = Path(self.proj.getPath()) / "viewer.png"
        fig.savefig(path)
        self.assertGreater(path.stat().st_size, 10000)

    def test_shipped_general_model_needs_no_model_input(self):
        from nt2c_core.general import GENERAL_MODEL

        if not GENERAL_MODEL.is_file():
            self.skipTest(f"{GENERAL_MODEL} is not installed")
        mics = self.launchProtocol(self._import_mics(self.sim / "noisy"))
        prot = self.newProtocol(ProtNT2CDenoise, numberOfThreads=1, streamingSleepOnWait=1, useGeneralModel=True)
        prot.inputMicrographs.set(mics)
        prot.inputMicrographs.setExtended("outputMicrographs")
        # one thread: the main thread runs the steps itself (no step generator holds a thread)
        self.assertEqual(prot.validate(), [])
        self.assertIn("Yang2024SaID", prot._citations())
        den = self.launchProtocol(prot)
        self.assertSetSize(den.outputMicrographs, 4)
        log = Path(den.getLogPaths()[0]).read_text()  # run.stdout: what a facility reads
        for expected in (
            "NT2C denoise: shipped general model",
            "file sha256 ",
            "device cpu; torch threads ",
            "denoised in ",
            "(4 this run)",
            "NT2C denoise: output outputMicrographs: ",
        ):
            self.assertIn(expected, log)
        self.assertNotIn("Cannot get information about MPI/threads", log)
        gains = []
        for mic in den.outputMicrographs:
            raw = mics.outputMicrographs[mic.getObjId()]
            clean, _ = read_mrc(self.sim / "clean" / Path(raw.getFileName()).name)
            gains.append(psnr(read_mrc(mic.getFileName())[0], clean) - psnr(read_mrc(raw.getFileName())[0], clean))
        self.assertGreater(min(gains), 2.0)

    def test_binned_output_scales_sampling(self):
        mics = self.launchProtocol(self._import_mics(self.sim / "noisy"))
        den = self.launchProtocol(self._denoise(mics, self._import_model(), binning=1))
        self.assertAlmostEqual(den.outputMicrographs.getSamplingRate(), 4.0)
        first = den.outputMicrographs.getFirstItem()
        self.assertEqual(read_mrc(first.getFileName())[0].shape, (128, 128))
        self.assertAlmostEqual(first.getSamplingRate(), 4.0)

    def test_bad_micrograph_is_reported_and_the_others_denoised(self):
        folder = Path(self.proj.getPath()) / "with_bad"
        folder.mkdir()
        for src in sorted((self.sim / "noisy").glob("*.mrc"))[:2]:
            shutil.copy(src, folder / src.name)
        bad = np.ones((256, 256), np.float32)
        bad[5, 5] = np.nan
        write_mrc(folder / "mic_bad.mrc", bad, 2.0)
        mics = self.launchProtocol(self._import_mics(folder))
        gone = sorted(folder.glob("*.mrc"))[0]
        os.remove(gone)  # a micrograph file lost after import (the import links to it)
        den = self.launchProtocol(self._denoise(mics, self._import_model()))
        self.assertSetSize(den.outputMicrographs, 1)
        summary = "\n".join(den._summary())
        self.assertIn("Not denoised", summary)
        self.assertIn("mic_bad", summary)
        self.assertIn("NaN", summary)
        self.assertIn(gone.stem, summary)
        self.assertIn("not found", summary)

    def test_invalid_inputs_are_named_before_running(self):
        fake = Path(self.proj.getPath()) / "fake.pt"
        fake.write_text("not a model")
        errors = self.newProtocol(ProtNT2CImportModel, modelFile=str(fake)).validate()
        self.assertTrue(any("not an NT2C model" in e for e in errors), errors)
        import torch

        from nt2c_core.models import UNet, save_model

        net = UNet(width=8)
        with torch.no_grad():
            next(net.parameters()).fill_(float("nan"))
        nan_model = save_model(Path(self.proj.getPath()) / "nan.pt", net, {"kind": "denoiser"})
        errors = self.newProtocol(ProtNT2CImportModel, modelFile=str(nan_model)).validate()
        self.assertTrue(any("not finite" in e for e in errors), errors)
        wrong = torch.load(self.model_path, weights_only=True)  # width 24 weights declared as width 32
        meta = __import__("json").loads(wrong["metadata"])
        meta["architecture"]["width"] = 32
        wrong["metadata"] = __import__("json").dumps(meta)
        torch.save(wrong, Path(self.proj.getPath()) / "wrong_width.pt")
        errors = self.newProtocol(
            ProtNT2CImportModel, modelFile=str(Path(self.proj.getPath()) / "wrong_width.pt")
        ).validate()
        self.assertTrue(any("do not fit" in e for e in errors), errors)
        mics = self.launchProtocol(self._import_mics(self.sim / "noisy"))
        model = self._import_model()
        os.remove(model.outputModel.getFileName())  # the model file moved away
        errors = self._denoise(mics, model, **{"gpuList": "zero"}).validate()
        self.assertTrue(any("model file" in e and "missing" in e for e in errors), errors)
        self.assertTrue(any("GPU IDs" in e for e in errors), errors)

    def test_sets_without_acquisition_or_empty_are_refused(self):
        """(A set with mixed sampling rates cannot exist: pwem sets give their items the set's rate.)"""
        model = self._import_model()
        expected = {"no acquisition": "no acquisition", "empty": "is empty"}
        for label, message in expected.items():
            mics = SetOfMicrographs(filename=str(Path(self.proj.getPath()) / f"{label.replace(' ', '_')}.sqlite"))
            mics.setSamplingRate(2.0)
            if label == "no acquisition":
                mic = Micrograph(location="c.mrc")
                mic.setMicName("c.mrc")
                mics.append(mic)
            else:
                mics.getAcquisition().setVoltage(300)
            mics.setStreamState(Set.STREAM_CLOSED)
            den = self.newProtocol(ProtNT2CDenoise)
            den.inputMicrographs.set(mics)
            den.inputModel.set(model)
            den.useGeneralModel.set(False)
            den.inputModel.setExtended("outputModel")
            errors = den.validate()
            self.assertTrue(any(message in e for e in errors), f"{label}: {errors}")

    def test_streaming_input_grows_and_output_closes(self):
        folder = Path(self.proj.getPath()) / "incoming"
        folder.mkdir()
        sources = sorted((self.sim / "noisy").glob("*.mrc"))
        shutil.copy(sources[0], folder / sources[0].name)
        imp = self._import_mics(folder, streaming=True, timeout="30s", fileTimeout=1)
        self.proj.launchProtocol(imp, wait=False)
        model = self._import_model()
        den = self.newProtocol(ProtNT2CDenoise)  # the form's defaults: 2 threads, 10 s checks, no batch size
        self.assertEqual(den.streamingSleepOnWait.get(), 10)
        self.assertEqual(den.numberOfThreads.get(), 2)  # main (which looks for new input) + one worker: a 2-CPU node
        self.assertTrue(den.useGeneralModel.get())  # the shipped model preselected
        self.assertFalse(den.hasAttribute("streamingBatchSize"))
        den.inputMicrographs.set(imp)
        den.inputMicrographs.setExtended("outputMicrographs")
        den.inputModel.set(model)
        den.useGeneralModel.set(False)
        den.inputModel.setExtended("outputModel")
        self._wait_for_output(imp)
        self.proj.launchProtocol(den, wait=False)
        sizes = []
        for src in sources[1:]:
            time.sleep(6)
            shutil.copy(src, folder / src.name)
            sizes.append(self._size(den))
        while True:  # the input is still open (30 s after the last file): denoising must go on meanwhile
            self.proj._updateProtocol(imp)
            if not imp.isActive():
                break
            sizes.append(self._size(den))
            time.sleep(2)
        self.assertGreater(max(sizes), 0, "nothing was denoised while the input was still growing")
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(3)
            self.proj._updateProtocol(den)  # refreshes den in place
            if den.isFinished() or den.isFailed():
                break
        self.assertTrue(den.isFinished(), f"denoise did not finish: {den.getStatus()}")
        out = den.outputMicrographs
        self.assertSetSize(out, len(sources))
        self.assertFalse(out.isStreamOpen())
        ids = [m.getObjId() for m in out]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(len(list(Path(den._getExtraPath()).glob("*.mrc"))), len(sources))
        self.assertLess(sizes[0], len(sources))  # it was still growing while files arrived

    def test_pick_on_denoised_extract_on_raw(self):
        """A real picker (DoG) on the denoised set, its coordinates imported into Scipion against
        that set, then resolved to the raw micrographs by micName and objId and boxes cut from the
        raw images: the picks land on the true particles, better than picking on raw. Binned
        output (binning=1, 2x) shows the documented coordinate scale: multiply by the ratio of
        sampling rates to map back. (No extraction protocol runs without Xmipp/Relion binaries;
        this does what theirs do with "other" micrographs: match by micName, use micId.)"""
        mics = self.launchProtocol(self._import_mics(self.sim / "noisy"))
        raw_by_name = {m.getMicName(): m.clone() for m in mics.outputMicrographs}
        model = self._import_model()
        radius_a, box = 60.0, 64  # 20S proteasome: ~60 Å half-width; box in raw px
        for binning in (0, 1):
            den = self.launchProtocol(self._denoise(mics, model, binning=binning))
            picked = den.outputMicrographs
            factor = picked.getSamplingRate() / mics.outputMicrographs.getSamplingRate()
            coords = self._import_picks(den, radius_a / picked.getSamplingRate(), box, f"picks_bin{binning}")
            self.assertGreater(coords.getSize(), 0)
            by_mic: dict[str, list] = {}
            for coord in coords:
                raw = raw_by_name[coord.getMicName()]
                self.assertEqual(coord.getMicId(), raw.getObjId())
                by_mic.setdefault(coord.getMicName(), []).append(np.array(coord.getPosition()) * factor)
            scores_den, scores_raw, contrast = [], [], []
            for name, positions in by_mic.items():
                raw_path = raw_by_name[name].getFileName()
                image, _ = read_mrc(raw_path)
                truth = self._truth(raw_path)
                scores_den.append(score_picks(np.array(positions), truth, 0.5 * radius_a / 2.0).f1)
                scores_raw.append(score_picks(pick_blobs(image, radius_a / 2.0), truth, 0.5 * radius_a / 2.0).f1)
                contrast.append(self._box_contrast(image, positions, box))
            self.assertGreaterEqual(np.mean(scores_den), 0.8, f"binning {binning}")
            self.assertGreaterEqual(np.mean(scores_den), np.mean(scores_raw), f"binning {binning}")
            self.assertLess(np.mean(contrast), 0, "boxes cut from raw at the picks hold dark particles")

    def _import_picks(self, den, radius_px, box, name):
        """Pick with the DoG picker on ``den``'s output, write a Scipion coordinates sqlite and
        import it against that output."""
        mics = den.outputMicrographs
        path = Path(self.proj.getPath()) / f"{name}.sqlite"
        picks = SetOfCoordinates(filename=str(path))
        picks.setMicrographs(mics)
        picks.setBoxSize(box)
        for mic in mics:
            for x, y in pick_blobs(read_mrc(mic.getFileName())[0], radius_px):
                coord = Coordinate()
                coord.setMicrograph(mic)
                coord.setPosition(int(x), int(y))
                picks.append(coord)
        picks.write()
        picks.close()
        prot = self.newProtocol(
            ProtImportCoordinates,
            importFrom=ProtImportCoordinates.IMPORT_FROM_SCIPION,
            filesPath=str(path),
            boxSize=box,
        )
        prot.inputMicrographs.set(den)
        prot.inputMicrographs.setExtended("outputMicrographs")
        return self.launchProtocol(prot).outputCoordinates

    def _truth(self, raw_path):
        star = read_star(self.sim / "coords" / f"{Path(raw_path).stem}.star")
        return np.stack([star["rlnCoordinateX"], star["rlnCoordinateY"]], 1)

    @staticmethod
    def _box_contrast(image, positions, box):
        """Mean of the central quarter of each box cut at the picks minus the box's mean (< 0:
        particles, which are dark, sit at the centre)."""
        values = []
        for x, y in positions:
            x0, y0 = int(round(x)) - box // 2, int(round(y)) - box // 2
            if x0 < 0 or y0 < 0 or x0 + box > image.shape[1] or y0 + box > image.shape[0]:
                continue
            cut = image[y0 : y0 + box, x0 : x0 + box]
            q = box // 4
            values.append(cut[box // 2 - q : box // 2 + q, box // 2 - q : box // 2 + q].mean() - cut.mean())
        return np.mean(values) / image.std() if values else 0.0

    def _wait_for_output(self, prot, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.proj._updateProtocol(prot)
            if prot.hasAttribute("outputMicrographs"):
                return
            time.sleep(1)
        raise AssertionError("import produced no output")

    def _size(self, prot):
        self.proj._updateProtocol(prot)
        out = getattr(prot, "outputMicrographs", None)
        return out.getSize() if out is not None else 0

    def test_template_loads_and_runs(self):
        from pyworkflow.template import LocalTemplate

        template = LocalTemplate("nt2c_scipion", str(PLUGIN_DIR / "templates" / "nt2c_denoise.json.template"))
        template.replaceEnvVariables()  # as scipion-app's kickoff does first: the template holds no %(VAR)s
        template.parseContent()
        template.setParamValue("filesPath", str(self.sim / "noisy"))
        template.setParamValue("samplingRate", "2.0")
        template.setParamValue("streamingSleepOnWait", "1")
        protocols = self.proj.loadProtocols(template.createTemplateFile())
        runs = sorted(self.proj.getRuns(refresh=True), key=lambda p: p.getObjId())[-2:]
        classes = [p.getClassName() for p in runs]
        self.assertEqual(classes, ["ProtImportMicrographs", "ProtNT2CDenoise"])  # the shipped general model
        for prot in runs:
            self.launchProtocol(prot)
        den = self.proj.getProtocol(runs[-1].getObjId())
        self.assertSetSize(den.outputMicrographs, 4)
        del protocols


class TestNT2CRealMicrograph(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        simulated(cls)

    def test_real_micrograph_denoised_with_pixel_size_warning(self):
        real = Path(__file__).resolve().parents[3] / "shared" / "data" / "micrographs" / "epu2.9_example.mrc"
        if not real.is_file():
            self.skipTest(f"shared real data not found at {real} (CI provides ../shared/data)")
        folder = Path(self.proj.getPath()) / "real"
        folder.mkdir()
        os.symlink(real, folder / real.name)
        imp = self.newProtocol(
            ProtImportMicrographs,
            filesPath=str(folder),
            filesPattern="*.mrc",
            samplingRate=0.6666,
            voltage=300,
            sphericalAberration=2.7,
            amplitudeContrast=0.1,
        )
        imp = self.launchProtocol(imp)
        model = self.launchProtocol(self.newProtocol(ProtNT2CImportModel, modelFile=self.model_path))
        den = self.newProtocol(ProtNT2CDenoise, numberOfThreads=3, streamingSleepOnWait=1, binning=2)
        den.inputMicrographs.set(imp)
        den.inputMicrographs.setExtended("outputMicrographs")
        den.inputModel.set(model)
        den.useGeneralModel.set(False)
        den.inputModel.setExtended("outputModel")
        self.assertTrue(any("trained at 2.000" in w for w in den._warnings()))
        den = self.launchProtocol(den)
        mic = den.outputMicrographs.getFirstItem()
        image, pixel = read_mrc(mic.getFileName())
        self.assertEqual(image.shape, (1024, 1024))
        self.assertAlmostEqual(pixel, 0.6666 * 4, places=3)
        self.assertTrue(np.isfinite(image).all())
