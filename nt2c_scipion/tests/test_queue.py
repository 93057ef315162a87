"""Facilities run Scipion on SLURM: a one-node SLURM on this machine, a project whose hosts.conf is
the example in docs/hosts_slurm.conf, and NT2C protocols launched with "Use queue" on (the whole
run submitted with sbatch). The jobs must go through SLURM and the outputs be right."""

import os
import time
import unittest
from pathlib import Path

from pyworkflow.project import Manager
from pyworkflow.tests import BaseTest

from .helpers import ONE_CLICK_TINY
from .slurm import NODE_CPUS, PARTITION, LocalSlurm

HOSTS_EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "hosts_slurm.conf"


class TestSlurmQueue(BaseTest):
    @classmethod
    def setUpClass(cls):
        from nt2c_core.data import APOFERRITIN
        from nt2c_core.simulate import Acquisition, SimulationConfig
        from nt2c_core.simulate.experimental import make_experimental_dataset

        if not HOSTS_EXAMPLE.is_file():
            raise unittest.SkipTest(f"{HOSTS_EXAMPLE} is not in this installation (a source checkout has it)")
        root = Path(os.environ.get("SCIPION_TESTS", "/tmp")) / "nt2c-slurm"
        cls.slurm = LocalSlurm(root / "cluster").__enter__()
        cls._environ = dict(os.environ)
        os.environ.update(cls.slurm.env)  # sbatch/squeue of the project (and of the jobs) find the cluster
        # setupTestProject, with the facility's hosts.conf copied into the project
        cls.proj = Manager().createProject(cls.__name__, hostsConf=str(HOSTS_EXAMPLE))
        cls.outputPath = cls.proj.path
        os.chdir(cls.outputPath)
        cls.raw = root / "raw"
        make_experimental_dataset(
            [APOFERRITIN],
            SimulationConfig(Acquisition(pixel_size=2.5), size=(192, 160), particles=2, count=2, seed=4),
            root,
            progress=False,
        )
        cls.apoferritin = APOFERRITIN

    @classmethod
    def tearDownClass(cls):
        cls.slurm.__exit__(None, None, None)
        os.environ.clear()
        os.environ.update(cls._environ)

    def _import(self):
        from pwem.protocols import ProtImportMicrographs

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

    def _run_on_queue(self, prot, timeout=600):
        """Launch with 'Use queue' on (CPU partition, whole run as one job) and wait for the job."""
        prot._useQueue.set(True)
        prot.setQueueParams([PARTITION, {"JOB_MEMORY": "4096", "JOB_GPU_LINE": "", "QUEUE_FOR_JOBS": "N"}])
        prot.useGpu.set(False)
        self.proj.launchProtocol(prot)
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.proj._updateProtocol(prot)
            if prot.isFinished() or prot.isFailed() or prot.isAborted():
                break
            time.sleep(2)
        if not prot.isFinished():
            self.printLastLogLines(prot)
            self.fail(
                f"{prot.getRunName()} did not finish on the queue (status {prot.getStatus()}): {prot.getErrorMessage()}"
            )
        job = prot.getJobIds()[0] if prot.getJobIds() else None
        self.assertTrue(job, "no SLURM job id recorded: the run did not go through sbatch")
        script = Path(prot._getLogsPath(f"scipion{prot.strId()}.job"))
        self.assertTrue(script.is_file(), f"no submit script {script}")
        self.assertIn(f"#SBATCH --partition={PARTITION}", script.read_text())
        self.assertIn(f"#SBATCH --cpus-per-task={prot.numberOfThreads.get()}", script.read_text())
        deadline = time.time() + 30  # slurmctld writes the completion record when the job ends
        while not any(f"JobId={job} " in line for line in self.slurm.completed()) and time.time() < deadline:
            time.sleep(1)
        record = [line for line in self.slurm.completed() if f"JobId={job} " in line]
        self.assertTrue(record and "JobState=COMPLETED" in record[0], f"SLURM has no completed job {job}: {record}")
        return prot

    def test_denoise_and_one_click_run_through_sbatch(self):
        from nt2c_core.io import read_mrc
        from nt2c_scipion.protocols import ProtNT2C, ProtNT2CDenoise

        mics = self._import()
        den = self.newProtocol(ProtNT2CDenoise, useGeneralModel=True, streamingSleepOnWait=1)
        self.assertLessEqual(den.numberOfThreads.get(), NODE_CPUS)  # the default threads fit a 2-CPU node
        den.inputMicrographs.set(mics)
        den.inputMicrographs.setExtended("outputMicrographs")
        den = self._run_on_queue(den)
        self.assertSetSize(den.outputMicrographs, 2)
        for mic in den.outputMicrographs:
            raw = mics.outputMicrographs[mic.getObjId()]
            self.assertEqual(mic.getMicName(), raw.getMicName())
            self.assertEqual(read_mrc(mic.getFileName())[0].shape, read_mrc(raw.getFileName())[0].shape)

        nt2c = self.newProtocol(ProtNT2C, structureFile=str(self.apoferritin), **ONE_CLICK_TINY)
        nt2c.inputMicrographs.set(mics)
        nt2c.inputMicrographs.setExtended("outputMicrographs")
        nt2c = self._run_on_queue(nt2c)
        self.assertSetSize(nt2c.outputMicrographs, 2)
        self.assertEqual(nt2c.outputModel.getKind(), "denoiser")
        self.assertGreaterEqual(len(self.slurm.completed()), 2)
