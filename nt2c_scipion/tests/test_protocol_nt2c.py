"""The one-click NT2C protocol in a real Scipion project: every stage as a step, outputs linked
to the raw micrographs, and Continue after a failure skipping the finished stages. Tiny settings:
this checks the plumbing; denoising quality is checked in tests/core."""

import json
from pathlib import Path

from pwem.objects import SetOfMicrographs
from pwem.protocols import ProtImportMicrographs
from pyworkflow.protocol import MODE_RESUME
from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_core.data import APOFERRITIN
from nt2c_core.io import read_mrc
from nt2c_core.simulate import Acquisition, SimulationConfig
from nt2c_core.simulate.experimental import make_experimental_dataset
from nt2c_scipion.protocols import ProtNT2C, ProtNT2CSimulate
from nt2c_scipion.viewers.viewer_training import (
    draw_losses,
    draw_raw_coarse_fine,
    draw_selection,
    raw_coarse_fine,
    selection_rows,
    stage_images,
)
from nt2c_scipion.wizards import NT2CNoisePatchWizard

from .helpers import ONE_CLICK_TINY


class TestNT2COneClick(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        out = Path(cls.proj.getPath()) / "oneclick"
        make_experimental_dataset(
            [APOFERRITIN],
            SimulationConfig(Acquisition(pixel_size=2.5), size=(192, 160), particles=2, count=2, seed=4),
            out,
            progress=False,
        )
        cls.raw = out / "raw"

    def _import(self):
        prot = self.newProtocol(
            ProtImportMicrographs,
            filesPath=str(self.raw),
            filesPattern="*.mrc",
            samplingRate=2.5,
            voltage=300,
            sphericalAberration=2.7,
            amplitudeContrast=0.07,
        )
        return self.launchProtocol(prot)

    def _nt2c(self, mics, **changes):
        prot = self.newProtocol(ProtNT2C, **{"structureFile": str(APOFERRITIN), **ONE_CLICK_TINY, **changes})
        prot.inputMicrographs.set(mics)
        prot.inputMicrographs.setExtended("outputMicrographs")
        return prot

    def test_failed_run_continues_without_redoing_finished_stages(self):
        mics = self._import()
        prot = self._nt2c(mics, minNoisePatches=100000, fewPatches=1)  # must fail at the noise stage: too few patches
        with self.assertRaises(Exception):
            self.launchProtocol(prot)
        work = Path(prot._getExtraPath("work"))
        self.assertTrue((work / "coarse" / "DONE.json").exists())
        self.assertFalse((work / "noise" / "DONE.json").exists())
        log = open(prot.getLogPaths()[0]).read() + open(prot.getLogPaths()[1]).read()
        self.assertIn("noise patches found (need 100000)", log)
        self.assertIn("lower extraction.threshold", log)
        stamps = {s: (work / s / "DONE.json").stat().st_mtime_ns for s in ("simulate", "coarse")}

        prot.minNoisePatches.set(1)
        prot.fewPatches.set(0)
        prot.runMode.set(MODE_RESUME)  # the GUI's Continue
        self.launchProtocol(prot)
        self.assertEqual({s: (work / s / "DONE.json").stat().st_mtime_ns for s in stamps}, stamps)
        for stage in ("noise", "gan", "fine", "denoised"):
            self.assertTrue((work / stage / "DONE.json").exists(), stage)
        self.assertTrue(all(step.isFinished() for step in prot.loadSteps()))

        out, raw = prot.outputMicrographs, mics.outputMicrographs
        self.assertSetSize(out, 2)
        self.assertAlmostEqual(out.getSamplingRate(), 2.5)
        for mic in out:
            self.assertEqual(mic.getMicName(), raw[mic.getObjId()].getMicName())
            self.assertEqual(read_mrc(mic.getFileName())[0].shape, (160, 192))
            stem = Path(raw[mic.getObjId()].getFileName()).stem
            self.assertEqual(Path(mic.getFileName()).name, f"{mic.getObjId():06d}_{stem}.mrc")  # never collides
        model = prot.outputModel
        self.assertEqual(model.getKind(), "denoiser")
        self.assertAlmostEqual(model.getPixelSize(), 2.5)
        config = json.loads(Path(prot._getExtraPath("nt2c_config.json")).read_text())
        self.assertEqual(config["simulation"]["acquisition"]["pixel_size"], 2.5)
        summary = "\n".join(prot._summary())
        self.assertIn("Stages complete: simulate, coarse, noise, gan, fine, denoised", summary)
        used = config["simulation"]
        self.assertIn(
            f"Simulation used (as set in the form): defocus {used['defocus_um'][0]}-{used['defocus_um'][1]} µm, "
            f"dose {used['acquisition']['dose']} e/Å²",
            summary,
        )
        log = open(prot.getLogPaths()[0]).read()
        self.assertIn("iteration 2/2: Wasserstein", log)  # the GAN reports progress in the run log
        self.assertIn("validation PSNR", log)  # so do the U-Net trainings

        # the training viewer's figures, headless
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3)
        self.assertEqual(draw_losses(axes, work), 3)  # coarse, GAN and fine loss logs
        images = stage_images(work)
        self.assertIn("gan_samples", images)
        self.assertEqual(sum(k.startswith("overlay") for k in images), 2)
        raw_img, coarse, fine, name = raw_coarse_fine(prot, 0)
        self.assertEqual(raw_img.shape, coarse.shape)
        self.assertEqual(fine.shape, coarse.shape)
        fig, axes = plt.subplots(1, 3)
        draw_raw_coarse_fine(axes, raw_img, coarse, fine)
        self.assertEqual(len(axes[0].images), 1)
        plt.close("all")

    def test_too_few_patches_goes_on_with_the_best_model_and_shows_the_choice(self):
        mics = self._import()
        prot = self.launchProtocol(self._nt2c(mics, minNoisePatches=100000, chooseModel=True))
        summary = "\n".join(prot._summary())
        self.assertIn("WARNING: only", summary)
        self.assertIn("Model choice:", summary)
        self.assertIn("| general |", summary)
        work = Path(prot._getExtraPath("work"))
        chosen = json.loads((work / "denoised" / "DONE.json").read_text())["chosen"]
        self.assertIn(chosen, ("general", "coarse"))
        self.assertFalse((work / "fine" / "model.pt").exists())
        self.assertSetSize(prot.outputMicrographs, 2)
        self.assertEqual(prot.outputModel.getKind(), "denoiser")
        # the training viewer's model-choice table, headless
        header, rows, reason = selection_rows(work)
        self.assertEqual([r[0] for r in rows], ["general", "coarse"])
        self.assertEqual([r[-1] for r in rows].count("yes"), 1)
        self.assertIn("residual band excess", header)
        self.assertIn(chosen, reason)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        self.assertEqual(draw_selection(ax, work), 2)
        plt.close("all")

    def test_bad_structure_and_missing_acquisition_are_refused(self):
        mics = self._import()
        bad = Path(self.proj.getPath()) / "not_a_structure.pdb"
        bad.write_text("hello\n")
        errors = self._nt2c(mics, structureFile=str(bad)).validate()
        self.assertTrue(any("not a PDB/mmCIF" in e for e in errors), errors)
        errors = self._nt2c(mics, structureFile=str(bad) + ".missing").validate()
        self.assertTrue(any("not found" in e for e in errors), errors)
        errors = self._nt2c(mics, crop=100).validate()
        self.assertTrue(any("multiple of 32" in e for e in errors), errors)
        errors = self._nt2c(mics, fineSteps=0).validate()  # found before the first stage, not hours later
        self.assertTrue(any("fine.steps" in e for e in errors), errors)
        no_acquisition = SetOfMicrographs(filename=str(Path(self.proj.getPath()) / "no_acq.sqlite"))
        no_acquisition.setSamplingRate(2.5)
        prot = self._nt2c(mics)
        prot.inputMicrographs.set(no_acquisition)
        self.assertTrue(any("no acquisition" in e for e in prot.validate()))

    def test_one_click_defaults_are_the_core_defaults(self):
        """Left at its defaults, the one-click protocol runs the stages with the settings of
        'nt2c run' and the CLI (nt2c_core.settings): no drift in learning rate, batch or patches."""
        from nt2c_core.pipeline import PipelineConfig
        from nt2c_core.settings import COARSE, COARSE_TRANSFER, EXTRACTION, FINE, GAN, MIN_NOISE_PATCHES, STAGES
        from nt2c_scipion.protocols import protocol_nt2c

        self.assertIs(protocol_nt2c.STAGES, STAGES)
        prot = self.newProtocol(ProtNT2C, structureFile=str(APOFERRITIN))
        prot.inputMicrographs.set(self._import())
        prot.inputMicrographs.setExtended("outputMicrographs")
        config = prot._pipelineConfig()
        run = PipelineConfig(raw=config.raw, structures=config.structures)
        self.assertEqual(
            (config.coarse, config.fine, config.gan, config.extraction), (COARSE_TRANSFER, FINE, GAN, EXTRACTION)
        )  # coarse from the general model: its rate
        prot.coarseFromGeneral.set(False)
        self.assertEqual((prot._pipelineConfig().coarse, prot._pipelineConfig().coarse_init), (COARSE, "none"))
        self.assertEqual(
            (config.min_noise_patches, config.noise_model, config.coarse_init, config.few_patches),
            (MIN_NOISE_PATCHES, run.noise_model, run.coarse_init, run.few_patches),
        )
        self.assertEqual(config.tiles, run.tiles)
        example = PipelineConfig.example("cpu").simulation
        self.assertEqual(config.simulation.carbon_fraction, example.carbon_fraction)  # films as `nt2c run`'s presets
        self.assertGreater(config.simulation.carbon_fraction, 0)
        self.assertEqual(config.simulation.ice_gradient, example.ice_gradient)  # flat ice, as `nt2c run`
        prot.iceGradient.set(0.95)
        self.assertTrue(any("ice gradient" in e for e in prot.validate()), prot.validate())

    def test_stage_route_and_one_click_simulate_the_same_pairs(self):
        """The same form values give the same training simulation on both Scipion routes (one
        preset, nt2c_core.settings.TRAINING_SIMULATION, carbon films included), at the defaults
        and at other values."""
        from nt2c_core.settings import TRAINING_SIMULATION

        mics = self._import()
        values = [{}, dict(particles=9, carbonFraction=0.5, iceGradient=0.1, seed=3)]
        for extra in values:
            one = self.newProtocol(ProtNT2C, structureFile=str(APOFERRITIN), simCount=12, simSize=256, **extra)
            stage = self.newProtocol(ProtNT2CSimulate, structureFile=str(APOFERRITIN), count=12, size=256, **extra)
            for prot in (one, stage):
                prot.inputMicrographs.set(mics)
                prot.inputMicrographs.setExtended("outputMicrographs")
            self.assertEqual(one._pipelineConfig().simulation, stage._simulation(), extra)
            self.assertEqual(
                stage._simulation().carbon_fraction, extra.get("carbonFraction", TRAINING_SIMULATION.carbon_fraction)
            )

    def test_noise_patch_wizard_uses_the_structure_and_sampling(self):
        mics = self._import()
        prot = self._nt2c(mics)

        class Form:
            protocol = prot
            values = {}

            def setVar(self, name, value):
                self.values[name] = value

        form = Form()
        NT2CNoisePatchWizard().show(form)
        # apoferritin: 134 Å across; two diameters at 2.5 Å/px = 107 px -> 128 px
        self.assertEqual(form.values["noisePatch"], 128)
