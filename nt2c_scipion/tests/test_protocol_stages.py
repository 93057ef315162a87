"""NT2C stage by stage in a real Scipion project: import -> simulate -> train coarse -> extract
noise -> train noise GAN -> train fine -> denoise, on small simulated data (about a minute of
training on CPU): set sizes, object links (micName/objId pairing, patch coordinates on their
micrographs), and the fine model beating raw in PSNR against the ground truth."""

from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from pwem.objects import Micrograph, SetOfMicrographs
from pwem.protocols import ProtImportMicrographs
from pyworkflow.tests import BaseTest, setupTestProject

from nt2c_core.data import APOFERRITIN
from nt2c_core.io import read_mrc
from nt2c_core.metrics import psnr
from nt2c_core.simulate import Acquisition, SimulationConfig
from nt2c_core.simulate.experimental import make_experimental_dataset
from nt2c_scipion.objects import NT2CModel
from nt2c_scipion.protocols import (
    ProtNT2CDenoise,
    ProtNT2CExtractNoise,
    ProtNT2CSimulate,
    ProtNT2CTrainCoarse,
    ProtNT2CTrainFine,
    ProtNT2CTrainNoiseGAN,
)
from nt2c_scipion.viewers.viewer_training import stage_pngs
from nt2c_scipion.wizards import draw_threshold_preview, threshold_preview


def _link(prot, attr, source, output):
    pointer = getattr(prot, attr)
    pointer.set(source)
    pointer.setExtended(output)


class TestNT2CStages(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.data = Path(cls.proj.getPath()) / "stages"
        make_experimental_dataset(
            [APOFERRITIN],
            SimulationConfig(Acquisition(pixel_size=2.5), size=(256, 256), particles=3, count=2, seed=4),
            cls.data,
            progress=False,
        )

    def assertRunLog(self, prot, *expected):
        """The run's stdout (what a facility reads) holds every expected line fragment, and none of
        pyworkflow's warning that it cannot read the protocol's threads."""
        log = Path(prot.getLogPaths()[0]).read_text()
        for text in expected:
            self.assertIn(text, log, f"{prot.getRunName()}: no {text!r} in its run.stdout")
        self.assertNotIn("Cannot get information about MPI/threads", log)

    def test_stage_by_stage_chain(self):
        imp = self.launchProtocol(
            self.newProtocol(
                ProtImportMicrographs,
                filesPath=str(self.data / "raw"),
                filesPattern="*.mrc",
                samplingRate=2.5,
                voltage=300,
                sphericalAberration=2.7,
                amplitudeContrast=0.07,
            )
        )
        raw = imp.outputMicrographs

        sim = self.newProtocol(ProtNT2CSimulate, structureFile=str(APOFERRITIN), count=8, size=128, particles=3)
        _link(sim, "inputMicrographs", imp, "outputMicrographs")
        sim = self.launchProtocol(sim)
        self.assertSetSize(sim.outputNoisy, 8)
        self.assertSetSize(sim.outputClean, 8)
        self.assertAlmostEqual(sim.outputNoisy.getSamplingRate(), 2.5)
        self.assertEqual(sim.outputNoisy.getAcquisition().getVoltage(), 300)
        self.assertEqual([m.getMicName() for m in sim.outputNoisy], [m.getMicName() for m in sim.outputClean])
        threads = f"device cpu, {sim.numberOfThreads.get()} torch threads"  # the form's threads (2)
        self.assertRunLog(
            sim, f"simulate: {threads}", "simulate: done in ", "simulate: 8/8 (100%)", "output outputNoisy: "
        )

        coarse = self.newProtocol(ProtNT2CTrainCoarse, steps=150, crop=64, batchSize=8, width=8, learningRate=2e-3)
        _link(coarse, "inputNoisy", sim, "outputNoisy")
        _link(coarse, "inputClean", sim, "outputClean")
        coarse = self.launchProtocol(coarse)
        self.assertEqual(coarse.outputModel.getKind(), "denoiser")
        self.assertRunLog(
            coarse,
            f"train-coarse: {threads}",
            "train: 150/150 (100%)",
            ", ETA ",
            "train-coarse: done in ",
            "output outputModel: ",
        )
        self.assertAlmostEqual(coarse.outputModel.getPixelSize(), 2.5)
        # the same stage function as 'nt2c train' and 'nt2c run': same config -> same weights, and the
        # model carries the simulation's acquisition (read from the simulation's params.json)
        from nt2c_core.models import load_model
        from nt2c_core.stages import train_coarse

        direct = Path(self.proj.getPath()) / "direct_coarse.pt"
        train_coarse(coarse._getExtraPath("pairs"), direct, coarse._trainConfig(), "cpu", progress=False)
        (protocol_net, protocol_meta), (direct_net, _) = (
            load_model(coarse.outputModel.getFileName()),
            load_model(direct),
        )
        for a, b in zip(protocol_net.state_dict().values(), direct_net.state_dict().values()):
            self.assertTrue(torch.equal(a, b))
        self.assertEqual(protocol_meta["acquisition"]["voltage_kv"], 300)
        self.assertEqual(protocol_meta["stage"], "coarse")

        noise = self.newProtocol(ProtNT2CExtractNoise, rule=1, patch=64, threshold=-0.99, minPatches=4)
        _link(noise, "inputMicrographs", imp, "outputMicrographs")
        _link(noise, "inputModel", coarse, "outputModel")
        noise = self.launchProtocol(noise)
        self.assertRunLog(
            noise,
            f"extract-noise: {threads}",
            f"model {coarse.outputModel.getFileName()}: denoiser (coarse stage), sha256 ",
            "extract-noise: done in ",
        )
        patches = noise.outputNoisePatches
        counts = noise._perMicrograph()
        self.assertSetSize(patches, sum(counts.values()))
        raw_ids = {m.getObjId(): m.getMicName() for m in raw}
        for particle in patches:
            coord = particle.getCoordinate()
            self.assertEqual(raw_ids[coord.getMicId()], coord.getMicName())
            self.assertTrue(32 <= coord.getX() <= 256 - 32 and 32 <= coord.getY() <= 256 - 32)
        self.assertIn("noise patches of 64 px from 2 micrographs", "\n".join(noise._summary()))
        self.assertEqual(sum(k.startswith("noise tiles") for k in stage_pngs(noise)), 2)
        # the SSIM-threshold wizard's preview: a threshold above every score keeps nothing
        raw_img, found = threshold_preview(noise)
        self.assertEqual(len(found.origins), len(found.all_origins))  # threshold -0.99 keeps every tile
        noise.threshold.set(0.999)
        self.assertEqual(len(threshold_preview(noise)[1].origins), int((found.all_scores > 0.999).sum()))
        fig, axes = plt.subplots(1, 2)
        draw_threshold_preview(axes, raw_img, found, 64, -0.99)
        self.assertEqual(len(axes[0].patches), len(found.origins))
        plt.close("all")

        gan = self.newProtocol(ProtNT2CTrainNoiseGAN, iterations=20, crop=64, batchSize=8, width=4)
        _link(gan, "inputPatches", noise, "outputNoisePatches")
        gan = self.launchProtocol(gan)
        self.assertEqual(gan.outputModel.getKind(), "noise-gan")
        self.assertRunLog(gan, f"train-noise: {threads}", "train-noise: done in ")
        self.assertAlmostEqual(gan.outputModel.getPixelSize(), 2.5)  # recorded by the core, as on the CLI
        self.assertEqual(set(stage_pngs(gan)), {"loss curves", "real vs generated noise"})

        fine = self.newProtocol(ProtNT2CTrainFine, steps=30, crop=64, batchSize=8, learningRate=5e-4)
        _link(fine, "inputNoisy", sim, "outputNoisy")
        _link(fine, "inputClean", sim, "outputClean")
        _link(fine, "inputCoarse", coarse, "outputModel")
        _link(fine, "inputNoiseModel", gan, "outputModel")
        _link(fine, "inputMicrographs", imp, "outputMicrographs")  # the data-consistency term's real micrographs
        fine = self.launchProtocol(fine)
        self.assertRunLog(fine, f"train-fine: {threads}", ": noise-gan, sha256 ", "train-fine: done in ")
        meta = fine.outputModel.getMetadata()
        self.assertEqual(
            (meta.get("stage"), meta["consistency"]["micrographs"], meta["consistency"]["reference"]),
            ("fine", 2, "general"),
        )
        # the noise patches themselves instead of the GAN (the default noise model of 'nt2c run'), and the
        # data-consistency term tied to the raw micrographs alone (band choice 1: none)
        tiled = self.newProtocol(
            ProtNT2CTrainFine, steps=6, crop=64, batchSize=4, learningRate=5e-4, consistencyReference=1
        )
        for attr, (source, output) in {
            "inputNoisy": (sim, "outputNoisy"),
            "inputClean": (sim, "outputClean"),
            "inputCoarse": (coarse, "outputModel"),
            "inputNoiseModel": (noise, "outputNoisePatches"),
            "inputMicrographs": (imp, "outputMicrographs"),
        }.items():
            _link(tiled, attr, source, output)
        self.assertEqual(tiled.validate(), [])
        tiled = self.launchProtocol(tiled)
        meta = tiled.outputModel.getMetadata()
        self.assertEqual(
            (meta["noise_model"], meta["stage"], meta["consistency"]["reference"]), ("patches", "fine", "none")
        )
        self.assertEqual(read_mrc(meta["noise_source"], allow_stack=True)[0].shape[0], patches.getSize())

        den = self.newProtocol(ProtNT2CDenoise, useGeneralModel=False)
        _link(den, "inputMicrographs", imp, "outputMicrographs")
        _link(den, "inputModel", fine, "outputModel")
        den = self.launchProtocol(den)
        self.assertSetSize(den.outputMicrographs, 2)
        gains = []
        for mic in den.outputMicrographs:
            raw_path = raw[mic.getObjId()].getFileName()
            truth, _ = read_mrc(self.data / "truth" / Path(raw_path).name)
            gains.append(psnr(read_mrc(mic.getFileName())[0], truth) - psnr(read_mrc(raw_path)[0], truth))
        self.assertGreater(np.mean(gains), 1.0, gains)

    def test_form_defaults_are_the_core_defaults(self):
        """Each stage protocol, left at its defaults, builds the settings the CLI and 'nt2c run' use."""
        from nt2c_core.settings import COARSE, EXTRACTION, FINE, GAN, MIN_NOISE_PATCHES
        from nt2c_scipion.protocols.protocol_train import ProtNT2CTrainBase

        self.assertEqual(self.newProtocol(ProtNT2CTrainCoarse)._trainConfig(), COARSE)
        self.assertEqual(ProtNT2CTrainBase._trainConfig(self.newProtocol(ProtNT2CTrainFine)), FINE)
        self.assertEqual(self.newProtocol(ProtNT2CTrainNoiseGAN)._ganConfig(), GAN)
        extract = self.newProtocol(ProtNT2CExtractNoise)
        self.assertEqual(extract.extractSettings(), EXTRACTION)
        self.assertEqual(extract.minPatches.get(), MIN_NOISE_PATCHES)

    def test_fine_refuses_wrong_models_and_mismatched_sampling(self):
        self.assertTrue(any("Choose the simulated" in e for e in self.newProtocol(ProtNT2CTrainFine).validate()))
        pairs = {}
        for kind in ("noisy", "clean"):
            mics = SetOfMicrographs(filename=str(Path(self.proj.getPath()) / f"{kind}.sqlite"))
            mics.setSamplingRate(2.5)
            mic = Micrograph(location=f"{kind}/mic_0000.mrc")
            mic.setMicName("mic_0000.mrc")
            mics.append(mic)
            pairs[kind] = mics
        gan, coarse = NT2CModel(filename="gan.pt"), NT2CModel(filename="coarse.pt")
        gan.setMetadata({"kind": "denoiser", "pixel_size": 1.0})  # wrong kind, other pixel size
        coarse.setMetadata({"kind": "noise-gan"})
        fine = self.newProtocol(ProtNT2CTrainFine)
        fine.inputNoisy.set(pairs["noisy"])
        fine.inputClean.set(pairs["clean"])
        fine.inputNoiseModel.set(gan)
        fine.inputCoarse.set(coarse)
        real = SetOfMicrographs(filename=str(Path(self.proj.getPath()) / "real.sqlite"))
        real.setSamplingRate(1.0)
        fine.inputMicrographs.set(real)
        fine.consistency.set(-1.0)
        errors = "\n".join(fine.validate())
        self.assertIn("real micrographs are at 1.000 Å/px but the simulated pairs at 2.500 Å/px", errors)
        self.assertIn("Data-consistency weight: must be 0 (off) or positive", errors)
        self.assertIn("noise model must come from 'train noise GAN'", errors)
        self.assertIn("coarse model must be a denoiser", errors)
        self.assertIn("noise model was made at 1.000 Å/px but the simulated pairs are at 2.500 Å/px", errors)


class TestNT2CCalibratedSimulation(BaseTest):
    """'simulate training pairs' with 'calibrate' on: the simulation takes the dose and defocus
    measured on the micrographs instead of the form's values."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def test_simulation_uses_the_calibrated_dose_and_defocus(self):
        from nt2c_core.io import write_mrc
        from nt2c_core.simulate.micrograph import MicrographSimulator
        from nt2c_core.simulate.structure import load_structure

        folder = Path(self.proj.getPath()) / "counts"
        acq = Acquisition(pixel_size=1.5, dose=40.0, detector="K3")
        config = SimulationConfig(acq, size=(768, 768), particles=12, defocus_um=(2.0, 2.0), seed=3, count=2)
        simulator = MicrographSimulator([load_structure(APOFERRITIN)], config)
        for i in range(2):
            write_mrc(folder / f"mic{i}.mrc", simulator.simulate(i).noisy, 1.5)
        imp = self.launchProtocol(
            self.newProtocol(
                ProtImportMicrographs,
                filesPath=str(folder),
                filesPattern="*.mrc",
                samplingRate=1.5,
                voltage=300,
                sphericalAberration=2.7,
                amplitudeContrast=0.07,
            )
        )
        sim = self.newProtocol(
            ProtNT2CSimulate,
            structureFile=str(APOFERRITIN),
            count=2,
            size=256,
            particles=2,
            dose=30.0,
            defocusMin=0.8,
            defocusMax=1.0,
            detector=0,
            calibrate=True,
            iceGradient=0.2,
        )
        _link(sim, "inputMicrographs", imp, "outputMicrographs")
        sim = self.launchProtocol(sim)
        self.assertSetSize(sim.outputNoisy, 2)
        params = __import__("json").loads(Path(sim._getExtraPath("sim", "params.json")).read_text())["config"]
        self.assertAlmostEqual(params["acquisition"]["dose"], 40.0, delta=4.0)
        self.assertAlmostEqual(params["defocus_um"][0], 2.0, delta=0.05)
        self.assertEqual(params["ice_gradient"], 0.2)  # the form's uneven ice, kept through the calibration
        self.assertIn("calibration: real vs simulated spectra", stage_pngs(sim))
