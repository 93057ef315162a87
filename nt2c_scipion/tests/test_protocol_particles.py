"""The SR3 particle protocols in a real headless Scipion project: particles with CTF and
projection alignment imported from a Scipion sqlite, a restorer trained by the core and imported
with 'import model', restoration keeping identity (objId, CTF, alignment, sampling), quality
against the ground truth, the viewer figures, the training protocol and the menu entries."""

import unittest
from pathlib import Path

import numpy as np
from pwem.objects import SetOfParticles
from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_core.acquisition import Acquisition
from nt2c_core.data import APOFERRITIN
from nt2c_core.io import read_mrc
from nt2c_core.metrics import psnr
from nt2c_core.particles.simulate import simulate_particles
from nt2c_core.particles.sr3 import save_restorer, train_restorer
from nt2c_core.settings import RESTORER, ParticleSimulationConfig, RestorerConfig
from nt2c_core.simulate.structure import load_structure
from nt2c_scipion.protocols import ProtNT2CImportModel, ProtNT2CRestoreParticles, ProtNT2CTrainRestorer
from nt2c_scipion.viewers.viewer_particles import pairs_figure, particle_pairs, training_figure

from .helpers import import_particles, menu_views, particle_sqlite, protocol_places, truth_of

ACQ = Acquisition(pixel_size=6.0, dose=20.0, b_factor=60.0)
TINY = RestorerConfig(
    steps=240,
    batch_size=8,
    width=16,
    refine_steps=80,
    refine_width=8,
    refine_pool=64,
    lr=1e-3,
    log_every=40,
    checkpoint_every=40,
    batch=32,
)


class TestNT2CParticles(BaseTest):
    @classmethod
    def setUpClass(cls):
        """Two stacks of 12 simulated apoferritin particles with their truths, a Scipion sqlite
        with CTF and projection alignment per particle, and a tiny restorer trained on other
        particles."""
        setupTestProject(cls)
        root = Path(cls.proj.getPath()) / "particles"
        cls.sqlite, cls.truths = particle_sqlite(root)
        train = simulate_particles(
            [load_structure(APOFERRITIN)], ParticleSimulationConfig(ACQ, box=32, count=400, seed=1), progress=False
        )
        result = train_restorer(-train.noisy, -train.clean, TINY, progress=False)  # white, as the stacks
        cls.model = save_restorer(root / "restorer.pt", result, TINY, 6.0, 32, {"test": True})

    def _import_particles(self):
        return import_particles(self, self.sqlite)

    def _import_model(self):
        prot = self.newProtocol(ProtNT2CImportModel, modelFile=str(self.model))
        self.launchProtocol(prot)
        return prot.outputModel

    def test_forms_have_help_on_every_parameter_and_core_defaults(self):
        for cls in (ProtNT2CRestoreParticles, ProtNT2CTrainRestorer):
            prot = self.newProtocol(cls)
            for name, param in prot._definition.iterAllParams():
                assert param.help.get(), f"{cls.__name__}.{name} has no help text"
        prot = self.newProtocol(ProtNT2CRestoreParticles)
        assert prot.sampleSteps.get() == RESTORER.sample_steps and prot.batch.get() == RESTORER.batch

    def test_restore_keeps_identity_ctf_alignment_and_improves_psnr(self):
        particles = self._import_particles()
        model = self._import_model()
        self.assertEqual(model.getKind(), "particle-restorer")
        prot = self.newProtocol(ProtNT2CRestoreParticles, sampleSteps=4)
        prot.inputParticles.set(particles)
        prot.inputModel.set(model)
        self.assertEqual(prot.validate(), [])
        self.launchProtocol(prot)
        out = prot.outputParticles
        self.assertSetSize(out, 24)
        self.assertAlmostEqual(out.getSamplingRate(), 6.0)
        self.assertTrue(out.hasCTF() and out.hasAlignmentProj())
        files, gains = set(), []
        for particle in out.iterItems(orderBy="id"):
            raw = particles[particle.getObjId()]
            self.assertAlmostEqual(particle.getCTF().getDefocusU(), raw.getCTF().getDefocusU(), places=2)
            np.testing.assert_allclose(particle.getTransform().getMatrix(), raw.getTransform().getMatrix(), atol=1e-6)
            files.add(particle.getFileName())
            truth = truth_of(self.truths, raw)
            restored = read_mrc(particle.getFileName(), allow_stack=True)[0][particle.getIndex() - 1]
            original = read_mrc(raw.getFileName(), allow_stack=True)[0][raw.getIndex() - 1]
            gains.append(psnr(restored, truth) - psnr(original, truth))
        self.assertEqual(len(files), 2)
        self.assertGreater(float(np.mean(gains)), 2.0, f"mean PSNR gain {np.mean(gains):.2f} dB")
        summary = "\n".join(prot._summary())
        self.assertIn("Restored 24 of 24 particles", summary)
        # the invention check ran, and its verdict travels with the output set (sqlite properties)
        report = prot._invention()
        self.assertEqual(report["images"], RESTORER.invention_images)
        self.assertEqual(summary.startswith("WARNING: INVENTION"), report["flagged"], summary)
        stored = SetOfParticles(filename=out.getFileName())
        self.assertAlmostEqual(float(stored.getProperty("nt2cInventionExcess")), report["excess"], places=5)
        self.assertEqual(stored.getProperty("nt2cInventionFlagged"), str(report["flagged"]))
        self.assertAlmostEqual(out.nt2cInventionExcess.get(), report["excess"], places=5)  # project database
        self.assertEqual(prot._citations(), ["Zhang2024SR3"])
        raws, restored, ids = particle_pairs(prot, 20, 8)  # a page at the end: only 4 remain
        self.assertEqual(len(ids), 4)
        fig = pairs_figure(raws, restored, ids)
        path = Path(self.proj.getPath()) / "pairs.png"
        fig.savefig(path)
        self.assertGreater(path.stat().st_size, 5000)

    def test_uncertainty_is_a_second_particle_set(self):
        """Two draws per particle: outputVariance holds each particle's variance over the draws,
        with the same objIds; one draw is refused before running."""
        particles = self._import_particles()
        model = self._import_model()
        prot = self.newProtocol(ProtNT2CRestoreParticles, sampleSteps=2, samples=1, uncertainty=True, inventionImages=0)
        prot.inputParticles.set(particles)
        prot.inputModel.set(model)
        self.assertTrue(any("'Draws averaged' >= 2" in e for e in prot.validate()))
        prot.samples.set(2)
        self.assertEqual(prot.validate(), [])
        self.launchProtocol(prot)
        self.assertIn("Invention check off", "\n".join(prot._summary()))
        variance = prot.outputVariance
        self.assertSetSize(variance, 24)
        self.assertEqual(sorted(variance.getIdSet()), sorted(prot.outputParticles.getIdSet()))
        first = variance.getFirstItem()
        values = read_mrc(first.getFileName(), allow_stack=True)[0][first.getIndex() - 1]
        self.assertTrue(np.all(values >= 0) and values.mean() > 0)

    def test_restorer_of_another_kind_is_refused_before_running(self):
        particles = self._import_particles()
        from nt2c_core.general import GENERAL_MODEL

        imported = self.newProtocol(ProtNT2CImportModel, modelFile=str(GENERAL_MODEL))
        self.launchProtocol(imported)
        prot = self.newProtocol(ProtNT2CRestoreParticles, sampleSteps=0)
        prot.inputParticles.set(particles)
        prot.inputModel.set(imported.outputModel)
        errors = prot.validate()
        self.assertTrue(any("'particle-restorer'" in e for e in errors), errors)
        self.assertTrue(any("sample_steps" in e or "--sample-steps" in e for e in errors), errors)

    def test_train_restorer_from_particles(self):
        particles = self._import_particles()
        prot = self.newProtocol(
            ProtNT2CTrainRestorer,
            structureSource=1,
            structureFile=str(APOFERRITIN),
            count=40,
            steps=20,
            refineSteps=6,
            width=8,
            batchSize=4,
        )
        prot.inputSet.set(particles)
        self.assertEqual(prot.validate(), [])
        config = prot._simulation()
        self.assertEqual(config.box, 32)
        lo, hi = config.defocus_range_um
        self.assertAlmostEqual(lo * 1e4, min(p.getCTF().getDefocusV() for p in particles), delta=1.0)
        self.launchProtocol(prot)
        model = prot.outputModel
        self.assertEqual(model.getKind(), "particle-restorer")
        self.assertAlmostEqual(model.getPixelSize(), 6.0)
        fig, phases = training_figure(prot)
        self.assertEqual(phases, 2)
        unet = self.newProtocol(
            ProtNT2CTrainRestorer,
            structureSource=1,
            structureFile=str(APOFERRITIN),
            count=40,
            steps=20,
            width=8,
            batchSize=4,
            method=1,
        )
        unet.inputSet.set(particles)
        self.launchProtocol(unet)
        self.assertEqual(unet.outputModel.getMetadata()["method"], "U-Net")
        self.assertIn("U-Net restorer", "\n".join(unet._summary()))
        self.assertEqual(training_figure(unet)[1], 1)


class TestParticleMenu(unittest.TestCase):
    def test_particle_protocols_sit_in_the_spa_menu(self):
        places = dict(protocol_places(menu_views()["Protocols SPA"]))
        self.assertEqual(places["ProtNT2CRestoreParticles"], ("Particles", "Denoising", "default"))
        self.assertEqual(places["ProtNT2CTrainRestorer"], ("Particles", "Denoising", "default"))
