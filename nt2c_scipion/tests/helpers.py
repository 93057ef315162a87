"""Data for the plugin's tests, made with nt2c_core's simulator (no downloads)."""

from pathlib import Path

import numpy as np

from nt2c_core.acquisition import Acquisition
from nt2c_core.data import APOFERRITIN
from nt2c_core.io import write_mrc
from nt2c_core.particles.simulate import simulate_particles
from nt2c_core.settings import ParticleSimulationConfig
from nt2c_core.simulate.structure import load_structure

PARTICLE_ACQ = Acquisition(pixel_size=6.0, dose=20.0, b_factor=60.0)


def particle_sqlite(folder: Path, stacks: int = 2, per_stack: int = 12, seed: int = 11) -> tuple[Path, dict]:
    """Simulated apoferritin particles (box 32, 6 Å/px) in ``stacks`` MRC stacks and a Scipion
    SetOfParticles sqlite with each particle's CTF and projection alignment. Returns (sqlite path,
    {(stack stem, index from 1): clean image})."""
    from pwem.objects import Acquisition as PwAcquisition
    from pwem.objects import CTFModel, Particle, SetOfParticles, Transform

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sim = simulate_particles([load_structure(APOFERRITIN)], ParticleSimulationConfig(
        PARTICLE_ACQ, box=32, count=stacks * per_stack, seed=seed), progress=False)
    parts = SetOfParticles(filename=str(folder / "particles.sqlite"))
    parts.setSamplingRate(PARTICLE_ACQ.pixel_size)
    acq = PwAcquisition(voltage=300.0, sphericalAberration=2.7, amplitudeContrast=0.07, magnification=50000)
    parts.setAcquisition(acq)
    parts.setAlignmentProj()
    parts.setHasCTF(True)
    truths = {}
    for k in range(stacks):
        name = f"{'abcdefgh'[k]}_particles"
        path = folder / f"{name}.mrcs"
        write_mrc(path, sim.noisy[per_stack * k:per_stack * (k + 1)], PARTICLE_ACQ.pixel_size)
        for i in range(per_stack):
            j = per_stack * k + i
            particle = Particle()
            particle.setLocation(i + 1, str(path))
            ctf = CTFModel()
            ctf.setStandardDefocus(*sim.defocus[j])
            particle.setCTF(ctf)
            matrix = np.eye(4)
            matrix[:3, :3] = sim.rotations[j]
            particle.setTransform(Transform(matrix))
            particle.setAcquisition(acq)
            parts.append(particle)
            truths[(name, i + 1)] = sim.clean[j]
    parts.write()
    parts.close()
    return folder / "particles.sqlite", truths


def import_particles(test, sqlite: Path):
    """Launch pwem's particle import from a Scipion sqlite in ``test``'s project; its output set."""
    from pwem.protocols import ProtImportParticles

    prot = test.newProtocol(ProtImportParticles, importFrom=ProtImportParticles.IMPORT_FROM_SCIPION,
                            sqliteFile=str(sqlite), samplingRate=PARTICLE_ACQ.pixel_size, voltage=300.0,
                            sphericalAberration=2.7, amplitudeContrast=0.07, magnification=50000)
    test.launchProtocol(prot)
    return prot.outputParticles


def truth_of(truths: dict, particle) -> np.ndarray:
    """The clean image of an imported particle (import may rename the stack: match its stem's end)."""
    stem = Path(particle.getFileName()).stem
    name = next(n for n, _ in truths if stem.endswith(n))
    return truths[(name, particle.getIndex())]
