"""Pick on denoised, extract on raw, with scipion-em-relion (PyPI) driving Debian's RELION 3.1 (CPU):
RELION's LoG auto-picking on the NT2C-denoised set, then RELION's particle extraction from the raw
micrographs the denoised set links to (pwem's "other micrographs", matched by micName). Skipped
with the reason where RELION or scipion-em-relion is missing (``.ci/run`` installs both)."""

import os
import shutil
from pathlib import Path

import numpy as np
from pwem.protocols import ProtImportMicrographs
from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_core.evaluation.picking import score_picks
from nt2c_core.io import read_star
from nt2c_scipion.protocols import ProtNT2CDenoise

from .helpers import trained_denoiser

RELION_BIN = shutil.which("relion_autopick")


def _relion_protocols():
    """scipion-em-relion's LoG picker and extraction, pointed at the RELION on PATH (Debian's in
    /usr/bin): RELION_HOME is its prefix. None when either is missing."""
    if RELION_BIN is None:
        return None
    os.environ.setdefault("RELION_HOME", str(Path(RELION_BIN).resolve().parents[1]))
    try:
        from relion.protocols import ProtRelionAutopickLoG, ProtRelionExtractParticles
    except ImportError:
        return None
    return ProtRelionAutopickLoG, ProtRelionExtractParticles


class TestRelionChain(BaseTest):
    @classmethod
    def setUpClass(cls):
        cls.protocols = _relion_protocols()
        if cls.protocols is None:
            raise __import__("unittest").SkipTest(
                "RELION (apt-get install relion) or scipion-em-relion (pip) is missing; .ci/run installs both"
            )
        setupTestProject(cls)
        root, result = trained_denoiser()
        cls.sim = root / "test"
        cls.model_path = str(result.model_path)

    def test_log_picks_on_denoised_and_relion_extracts_from_raw(self):
        from nt2c_scipion.protocols import ProtNT2CImportModel

        log_class, extract_class = self.protocols
        imp = self.launchProtocol(
            self.newProtocol(
                ProtImportMicrographs,
                filesPath=str(self.sim / "noisy"),
                filesPattern="*.mrc",
                samplingRate=2.0,
                voltage=300,
                sphericalAberration=2.7,
                amplitudeContrast=0.07,
            )  # fmt: skip
        )
        raw = imp.outputMicrographs
        model = self.launchProtocol(self.newProtocol(ProtNT2CImportModel, modelFile=self.model_path))
        den = self.newProtocol(ProtNT2CDenoise, useGeneralModel=False)
        den.inputMicrographs.set(imp)
        den.inputMicrographs.setExtended("outputMicrographs")
        den.inputModel.set(model)
        den.inputModel.setExtended("outputModel")
        den = self.launchProtocol(den)

        diameter_a, box = 120, 64  # 20S proteasome, ~120 Å across; box in raw px
        pick = self.newProtocol(
            log_class, boxSize=box, minDiameter=int(0.8 * diameter_a), maxDiameter=int(1.2 * diameter_a),
            threshold=0.0, numberOfMpi=1,  # one process: plain relion_autopick (mpirun refuses root)
        )  # fmt: skip
        pick.inputMicrographs.set(den)
        pick.inputMicrographs.setExtended("outputMicrographs")
        pick = self.launchProtocol(pick)
        coords = pick.outputCoordinates
        self.assertGreater(coords.getSize(), 0)

        extract = self.newProtocol(
            extract_class, boxSize=box, downsampleType=1, saveFloat16=False, doInvert=False, numberOfMpi=1
        )
        extract.inputCoordinates.set(pick)
        extract.inputCoordinates.setExtended("outputCoordinates")
        extract.inputMicrographs.set(imp)  # the raw micrographs: pick on denoised, extract on raw
        extract.inputMicrographs.setExtended("outputMicrographs")
        extract = self.launchProtocol(extract)
        particles = extract.outputParticles

        raw_by_name = {m.getMicName(): (m.getObjId(), m.getFileName()) for m in raw}
        self.assertAlmostEqual(particles.getSamplingRate(), raw.getSamplingRate())
        self.assertEqual(particles.getXDim(), box)
        by_mic: dict[str, list] = {}
        for particle in particles:
            coord = particle.getCoordinate()
            obj_id, _ = raw_by_name[coord.getMicName()]  # every particle names a raw micrograph
            self.assertEqual(coord.getMicId(), obj_id)
            by_mic.setdefault(coord.getMicName(), []).append(coord.getPosition())
        self.assertLessEqual(particles.getSize(), coords.getSize())
        f1 = []
        for name, positions in by_mic.items():
            star = read_star(self.sim / "coords" / f"{Path(raw_by_name[name][1]).stem}.star")
            truth = np.stack([star["rlnCoordinateX"], star["rlnCoordinateY"]], 1)
            f1.append(score_picks(np.array(positions, float), truth, 0.25 * diameter_a / 2.0).f1)
        self.assertGreaterEqual(np.mean(f1), 0.6, f1)  # the extracted particles sit on the true ones
