"""Workflows a facility runs, in real headless projects: micrographs denoised with the shipped
general model (streaming protocol, its default threads), and particles restored by an SR3 restorer
trained by the plugin's own training protocol."""

from pathlib import Path

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_core.metrics import psnr

from .helpers import import_particles, particle_sqlite, restoration_gains


class TestNT2CGeneralModelWorkflow(BaseTest):
    """Import micrographs -> denoise micrographs (shipped general model)."""

    @classmethod
    def setUpClass(cls):
        from nt2c_core.data import PROTEASOME
        from nt2c_core.simulate import Acquisition, SimulationConfig, simulate_dataset

        setupTestProject(cls)
        cls.sim = Path(cls.proj.getPath()) / "simulated"
        config = SimulationConfig(
            Acquisition(pixel_size=2.0, dose=40.0),
            size=(256, 256),
            particles=8,
            defocus_um=(1.0, 2.5),
            count=2,
            seed=21,
        )
        simulate_dataset([PROTEASOME], config, cls.sim, progress=False)

    def test_general_model_denoises_and_keeps_identity(self):
        from pwem.protocols import ProtImportMicrographs

        from nt2c_core.io import read_mrc
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
        den = self.newProtocol(ProtNT2CDenoise, useGeneralModel=True, streamingSleepOnWait=1)
        den.inputMicrographs.set(imp)
        den.inputMicrographs.setExtended("outputMicrographs")
        self.assertEqual(den.validate(), [])
        self.launchProtocol(den)
        out, raw = den.outputMicrographs, imp.outputMicrographs
        self.assertSetSize(out, 2)
        for mic in out:
            source = raw[mic.getObjId()]
            self.assertEqual(mic.getMicName(), source.getMicName())
            clean = read_mrc(self.sim / "clean" / Path(source.getFileName()).name)[0]
            gain = psnr(read_mrc(mic.getFileName())[0], clean) - psnr(read_mrc(source.getFileName())[0], clean)
            self.assertGreater(gain, 1.0, f"{mic.getMicName()}: {gain:.2f} dB")


class TestNT2CRestoreWorkflow(BaseTest):
    """Import particles (CTF, alignment) -> train particle restorer (SR3) -> restore particles."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.sqlite, cls.truths = particle_sqlite(Path(cls.proj.getPath()) / "particles_in")

    def test_train_then_restore(self):
        from nt2c_core.data import APOFERRITIN
        from nt2c_scipion.protocols import ProtNT2CRestoreParticles, ProtNT2CTrainRestorer

        particles = import_particles(self, self.sqlite)
        train = self.newProtocol(
            ProtNT2CTrainRestorer,
            structureSource=1,
            structureFile=str(APOFERRITIN),
            count=300,
            steps=200,
            refineSteps=60,
            width=16,
            batchSize=8,
            learningRate=1e-3,
        )
        train.inputSet.set(particles)
        self.assertEqual(train.validate(), [])
        self.launchProtocol(train)
        restore = self.newProtocol(ProtNT2CRestoreParticles)
        restore.inputParticles.set(particles)
        restore.inputModel.set(train.outputModel)
        self.assertEqual(restore.validate(), [])
        self.launchProtocol(restore)
        out = restore.outputParticles
        self.assertSetSize(out, particles.getSize())
        self.assertTrue(out.hasCTF() and out.hasAlignmentProj())
        gains = restoration_gains(particles, out, self.truths)
        self.assertGreater(float(np.mean(gains)), 1.5, f"mean PSNR gain {np.mean(gains):.2f} dB")
