"""Data for the plugin's tests, made with nt2c_core's simulator (no downloads), and the protocol
menus as the GUI loads them."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from nt2c_core.acquisition import Acquisition
from nt2c_core.data import APOFERRITIN
from nt2c_core.io import write_mrc
from nt2c_core.particles.simulate import simulate_particles
from nt2c_core.settings import ParticleSimulationConfig
from nt2c_core.simulate.structure import load_structure

# The one-click protocol's form at toy budgets: plumbing, not quality (seconds on a CPU)
ONE_CLICK_TINY = dict(
    simCount=3,
    simSize=128,
    particles=2,
    coarseSteps=4,
    fineSteps=4,
    ganIterations=2,
    width=8,
    crop=64,
    noisePatch=64,
    noiseRule=1,
    ssimThreshold=-0.99,
    minNoisePatches=1,
    numberOfThreads=1,
    coarseFromGeneral=False,
    chooseModel=False,
    noiseModel=0,
)  # 0: the GAN route (the paper's)
PARTICLE_ACQ = Acquisition(pixel_size=6.0, dose=20.0, b_factor=60.0)


def particle_sqlite(
    folder: Path, stacks: int = 2, per_stack: int = 12, seed: int = 11, structure: Path = APOFERRITIN
) -> tuple[Path, dict]:
    """Simulated particles of ``structure`` (default apoferritin; box 32, 6 Å/px) in ``stacks`` MRC stacks and a Scipion
    SetOfParticles sqlite with each particle's CTF and projection alignment, protein white as
    RELION-extracted particles are. Returns (sqlite path, {(stack stem, index from 1): clean image})."""
    from pwem.objects import Acquisition as PwAcquisition
    from pwem.objects import CTFModel, Particle, SetOfParticles, Transform

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sim = simulate_particles(
        [load_structure(structure)],
        ParticleSimulationConfig(PARTICLE_ACQ, box=32, count=stacks * per_stack, seed=seed),
        progress=False,
    )
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
        write_mrc(path, -sim.noisy[per_stack * k : per_stack * (k + 1)], PARTICLE_ACQ.pixel_size)
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
            truths[(name, i + 1)] = -sim.clean[j]
    parts.write()
    parts.close()
    return folder / "particles.sqlite", truths


def import_particles(test, sqlite: Path):
    """Launch pwem's particle import from a Scipion sqlite in ``test``'s project; its output set."""
    from pwem.protocols import ProtImportParticles

    prot = test.newProtocol(
        ProtImportParticles,
        importFrom=ProtImportParticles.IMPORT_FROM_SCIPION,
        sqliteFile=str(sqlite),
        samplingRate=PARTICLE_ACQ.pixel_size,
        voltage=300.0,
        sphericalAberration=2.7,
        amplitudeContrast=0.07,
        magnification=50000,
    )
    test.launchProtocol(prot)
    return prot.outputParticles


def truth_of(truths: dict, particle) -> np.ndarray:
    """The clean image of an imported particle (import may rename the stack: match its stem's end)."""
    stem = Path(particle.getFileName()).stem
    name = next(n for n, _ in truths if stem.endswith(n))
    return truths[(name, particle.getIndex())]


def restoration_gains(raw_set, restored_set, truths: dict) -> list:
    """PSNR gain [dB] against the truth of every restored particle over its raw image; asserts
    each kept its projection alignment."""
    from nt2c_core.io import read_mrc
    from nt2c_core.metrics import psnr

    gains = []
    for particle in restored_set.iterItems(orderBy="id"):
        raw = raw_set[particle.getObjId()]
        np.testing.assert_allclose(particle.getTransform().getMatrix(), raw.getTransform().getMatrix(), atol=1e-6)
        truth = truth_of(truths, raw)
        restored = read_mrc(particle.getFileName(), allow_stack=True)[0][particle.getIndex() - 1]
        original = read_mrc(raw.getFileName(), allow_stack=True)[0][raw.getIndex() - 1]
        gains.append(psnr(restored, truth) - psnr(original, truth))
    return gains


@functools.lru_cache(maxsize=None)
def trained_denoiser():
    """(folder with train/ and test/ simulations, TrainResult of a coarse model), made once per
    process (about 3 minutes on a CPU): simulated apoferritin, 2 Å/px, 40 e/Å², K3, 400 steps;
    held-out simulated proteasome micrographs in test/ (clean, noisy, coords). Shared by the
    plugin's tests and the core's quality tests (tests/conftest.py)."""
    import tempfile

    from nt2c_core.data import PROTEASOME
    from nt2c_core.pairs import load_pairs
    from nt2c_core.simulate import SimulationConfig, simulate_dataset
    from nt2c_core.training import TrainConfig, train_denoiser

    acq, size = Acquisition(pixel_size=2.0, dose=40.0), (256, 256)
    root = Path(tempfile.mkdtemp(prefix="nt2c-trained-"))
    train_cfg = SimulationConfig(
        acq, size=size, particles=10, defocus_um=(1.0, 3.0), count=24, library_size=100, seed=0
    )
    simulate_dataset([APOFERRITIN], train_cfg, root / "train", progress=False)
    test_cfg = SimulationConfig(acq, size=size, particles=10, defocus_um=(1.0, 3.0), count=4, seed=99)
    simulate_dataset([PROTEASOME], test_cfg, root / "test", progress=False)
    config = TrainConfig(
        steps=400,
        batch_size=8,
        crop=128,
        width=24,
        lr=2e-3,
        val_every=100,
        checkpoint_every=200,
        val_fraction=0.15,
        seed=0,
    )
    result = train_denoiser(load_pairs(root / "train"), root / "coarse.pt", config, progress=False)
    return root, result


def menu_views() -> dict:
    """{view name: tree} as Scipion's GUI merges every plugin's protocols.conf."""
    import os

    import pyworkflow as pw
    from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig

    domain = pw.Config.getDomain()
    if domain is None:
        os.environ.setdefault("SCIPION_DOMAIN", "pwem")
        pw.Config.SCIPION_DOMAIN = "pwem"
        domain = pw.Config.getDomain()
    return ProtocolTreeConfig.load(domain, os.path.join(pw.Config.SCIPION_LOCAL_CONFIG, pw.Config.SCIPION_PROTOCOLS))


def protocol_places(node, prefix: str = "ProtNT2C", path=()):
    """(protocol class name, menu path of texts) of every entry under ``node`` whose class starts
    with ``prefix``."""

    def text(item, attr):
        value = getattr(item, attr, None)
        return value.get() if hasattr(value, "get") else value

    for child in node.childs:
        yield from protocol_places(child, prefix, path + (text(child, "text"),))
    if str(text(node, "value") or "").startswith(prefix):
        yield text(node, "value"), path


def simulated_tomograms(root: Path, names=("tomo_a", "tomo_b")) -> tuple[Path, dict]:
    """Simulated tomograms of apoferritin, 64 x 64 x 32 voxels of 10 Å (each simulated in its own
    folder under the same file name, collected into one import folder as <name>.mrc), and their
    ground truths {name: clean volume}."""
    import shutil

    from nt2c_core.io import read_mrc_volume
    from nt2c_core.settings import TomoSimulationConfig
    from nt2c_core.tomo.simulate import simulate_tomogram_files

    acq = Acquisition(pixel_size=10.0, dose=60.0, b_factor=60.0, detector="ideal")
    imports = root / "import"
    imports.mkdir(parents=True)
    truths = {}
    for seed, name in enumerate(names, start=1):
        cfg = TomoSimulationConfig(
            acquisition=acq, size=(64, 64), thickness=32, ice_thickness=250.0, particles=5, tilt_step_deg=4.0, seed=seed
        )
        paths = simulate_tomogram_files([APOFERRITIN], cfg, root / name, progress=False)
        shutil.copy(paths["noisy"], imports / f"{name}.mrc")
        truths[name] = read_mrc_volume(paths["clean"])[0]
    return imports, truths
