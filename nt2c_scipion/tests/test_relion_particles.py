"""Align on restored, reconstruct from raw, with scipion-em-relion (PyPI) driving Debian's RELION 3.1:
SR3-restored particles keep their link (objId) to the raw particles, RELION's 3-D auto-refine finds
poses on the restored set, pwem's 'assign alignment' gives those poses to the raw particles, and
RELION reconstructs the map from the raw images. Slow (RELION's auto-refine with 3 MPI processes,
minutes on 2 CPUs): run by ``make relion-check`` (NT2C_SLOW_TESTS=1), skipped by ``make test``;
skipped with the reason where RELION with MPI or scipion-em-relion is missing."""

import os
import shutil
from pathlib import Path

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_core.data import PROTEASOME
from nt2c_core.io import write_mrc
from nt2c_core.metrics import fsc
from nt2c_core.particles.maps import density_map, spherical_mask
from nt2c_core.particles.simulate import simulate_particles
from nt2c_core.particles.sr3 import save_restorer, train_restorer
from nt2c_core.settings import ParticleSimulationConfig
from nt2c_core.simulate.structure import load_structure
from nt2c_scipion.protocols import ProtNT2CImportModel, ProtNT2CRestoreParticles

from .helpers import PARTICLE_ACQ, import_particles, particle_sqlite
from .test_protocol_particles import TINY

RELION_REFINE_MPI = shutil.which("relion_refine_mpi")


def _relion_protocols():
    """scipion-em-relion's 3-D auto-refine and reconstruction, pointed at Debian's RELION (RELION_HOME
    = its prefix), with Open MPI allowed to run 3 processes on a 2-CPU machine (and as root in
    containers). None when RELION's MPI programs, mpirun or scipion-em-relion are missing."""
    if RELION_REFINE_MPI is None or shutil.which("mpirun") is None:
        return None
    os.environ.setdefault("RELION_HOME", str(Path(RELION_REFINE_MPI).resolve().parents[1]))
    for key in ("OMPI_MCA_rmaps_base_oversubscribe", "OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"):
        os.environ.setdefault(key, "1")
    try:
        from relion.protocols import ProtRelionReconstruct, ProtRelionRefine3D
    except ImportError:
        return None
    return ProtRelionRefine3D, ProtRelionReconstruct


class TestRelionParticleChain(BaseTest):
    @classmethod
    def setUpClass(cls):
        if os.environ.get("NT2C_SLOW_TESTS") != "1":
            raise __import__("unittest").SkipTest("slow (RELION auto-refine): run by make relion-check")
        cls.protocols = _relion_protocols()
        if cls.protocols is None:
            raise __import__("unittest").SkipTest(
                "RELION with MPI (apt-get install relion) or scipion-em-relion (pip) is missing; .ci/run installs both"
            )
        setupTestProject(cls)
        root = Path(cls.proj.getPath()) / "particles"
        cls.sqlite, cls.truths = particle_sqlite(root, stacks=2, per_stack=40, structure=PROTEASOME)
        structure = load_structure(PROTEASOME)
        train = simulate_particles(
            [structure], ParticleSimulationConfig(PARTICLE_ACQ, box=32, count=400, seed=1), progress=False
        )
        result = train_restorer(-train.noisy, -train.clean, TINY, progress=False)  # white, as the stacks
        cls.model = save_restorer(root / "restorer.pt", result, TINY, 6.0, 32, {"test": True})
        cls.truth = density_map(structure, 32, 6.0, 60.0)
        cls.reference = write_mrc(root / "reference.mrc", cls.truth, 6.0)

    def test_poses_found_on_restored_particles_reconstruct_the_raw_images(self):
        from pwem.protocols import ProtAlignmentAssign, ProtImportVolumes

        refine_class, reconstruct_class = self.protocols
        raw = import_particles(self, self.sqlite)
        model = self.launchProtocol(self.newProtocol(ProtNT2CImportModel, modelFile=str(self.model))).outputModel
        restore = self.newProtocol(ProtNT2CRestoreParticles, sampleSteps=4, inventionImages=64)
        restore.inputParticles.set(raw)
        restore.inputModel.set(model)
        self.launchProtocol(restore)
        restored = restore.outputParticles
        volume = self.launchProtocol(
            self.newProtocol(ProtImportVolumes, filesPath=str(self.reference), samplingRate=6.0)
        ).outputVolume
        refine = self.newProtocol(
            refine_class,
            referenceVolume=volume,
            isMapAbsoluteGreyScale=False,
            initialLowPassFilterA=30,
            symmetryGroup="c1",
            maskDiameterA=180,
            angularSamplingDeg=1,  # 15 degrees, then local searches
            offsetSearchRangePix=3,
            doCTF=True,
            numberOfMpi=3,
            numberOfThreads=1,
            doGpu=False,
            pooledParticles=3,
        )
        refine.inputParticles.set(restored)
        self.launchProtocol(refine)
        aligned = refine.outputParticles
        self.assertSetSize(aligned, 80)
        assign = self.newProtocol(ProtAlignmentAssign)
        assign.inputParticles.set(raw)
        assign.inputAlignment.set(aligned)
        self.launchProtocol(assign)
        raw_aligned = assign.outputParticles
        self.assertSetSize(raw_aligned, 80)
        self.assertTrue(raw_aligned.hasAlignmentProj())
        raw_files = {p.getFileName() for p in raw.iterItems()}
        for particle in raw_aligned.iterItems():  # raw images, the poses found on the restored ones
            self.assertIn(particle.getFileName(), raw_files)
            np.testing.assert_allclose(
                particle.getTransform().getMatrix(), aligned[particle.getObjId()].getTransform().getMatrix()
            )
        reconstruct = self.newProtocol(reconstruct_class, symmetryGroup="c1", doCTF=True, numberOfMpi=1)
        reconstruct.inputParticles.set(raw_aligned)
        self.launchProtocol(reconstruct)
        out = reconstruct.outputVolume
        self.assertAlmostEqual(out.getSamplingRate(), 6.0)
        import mrcfile

        mask = spherical_mask(32, 14)
        found = mrcfile.read(out.getFileName().split(":")[0])
        # the control: the same raw images and CTFs with random orientations
        from nt2c_core.acquisition import Acquisition
        from nt2c_core.particles.maps import reconstruct
        from nt2c_core.simulate.geometry import random_rotations

        images, defocus = [], []
        for particle in raw.iterItems(orderBy="id"):
            images.append(mrcfile.read(particle.getFileName())[particle.getIndex() - 1])
            ctf = particle.getCTF()
            defocus.append([ctf.getDefocusU(), ctf.getDefocusV(), ctf.getDefocusAngle()])
        rotations = random_rotations(len(images), np.random.default_rng(0))
        random = reconstruct(
            np.array(images), rotations, Acquisition(pixel_size=6.0, amplitude_contrast=0.07), np.array(defocus)
        )

        def band(a):  # mean FSC with the true map between 30 Å and Nyquist (12 Å): detail, not the envelope
            curve = fsc(a * mask, self.truth * mask, 6.0)
            return float(curve.correlation[curve.frequency >= 1 / 30].mean())

        self.assertGreater(
            band(found),
            abs(band(random)) + 0.2,
            f"FSC 30-12 Å: found poses {band(found):.2f}, random {band(random):.2f}",
        )
        self.assertLess(fsc(found * mask, self.truth * mask, 6.0).resolution(0.143), 20.0)
