"""A one-node SLURM cluster on this machine for the queue tests: Debian's slurm-wlm and munge,
started in a private folder with its own ports, stopped afterwards. Raises unittest.SkipTest with
the reason where that is impossible (packages missing, not root)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import unittest
from pathlib import Path

PARTITION = "cpu"  # the queue name of docs/hosts_slurm.conf's CPU partition
NODE_CPUS = 2  # the test node's CPUs: a job asking for more (e.g. --cpus-per-task=3) is refused by sbatch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class LocalSlurm:
    """``with LocalSlurm(folder) as slurm:`` -- slurmctld + slurmd on localhost; ``slurm.env`` holds
    SLURM_CONF for sbatch/squeue; ``slurm.completed()`` lists the finished jobs (jobcomp file)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.jobcomp = self.folder / "jobcomp.txt"
        self.env = {"SLURM_CONF": str(self.conf)}
        self._pids: list[Path] = []

    def __enter__(self) -> "LocalSlurm":
        missing = [p for p in ("slurmctld", "slurmd", "sbatch", "squeue", "munged", "munge") if not shutil.which(p)]
        if missing:
            raise unittest.SkipTest(
                f"SLURM not installed ({', '.join(missing)} missing): apt-get install slurm-wlm (.ci/run installs it)"
            )
        if os.geteuid() != 0:
            raise unittest.SkipTest("a local slurmd must run as root to start jobs as this user")
        self._start_munge()
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        cpus = NODE_CPUS  # a node as small as CI's: the forms' default threads must fit it
        f = self.folder
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=nt2ctest",
                    f"SlurmctldHost={host}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    f"StateSaveLocation={f}/state",
                    f"SlurmdSpoolDir={f}/spool",
                    f"SlurmctldPidFile={f}/slurmctld.pid",
                    f"SlurmdPidFile={f}/slurmd.pid",
                    f"SlurmctldLogFile={f}/slurmctld.log",
                    f"SlurmdLogFile={f}/slurmd.log",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "SlurmdParameters=config_overrides",
                    "JobCompType=jobcomp/filetxt",
                    f"JobCompLoc={self.jobcomp}",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    f"NodeName={host} CPUs={cpus} RealMemory=16000 State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        env = {**os.environ, **self.env}
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], env=env, check=True, capture_output=True)
            self._pids.append(f / f"{daemon}.pid")
        deadline = time.time() + 30
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if state.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise unittest.SkipTest(f"the local SLURM node did not come up: see {f}/slurmctld.log and slurmd.log")

    def _start_munge(self):
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return  # a munged already answers
        for folder in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
            Path(folder).mkdir(parents=True, exist_ok=True)
        if not Path("/etc/munge/munge.key").is_file():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
        subprocess.run(["munged", "--force"], capture_output=True)
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
            raise unittest.SkipTest("munged (SLURM's authentication) could not be started")

    def completed(self) -> list[str]:
        """Lines of the SLURM job-completion log (one per finished job)."""
        return self.jobcomp.read_text().splitlines() if self.jobcomp.is_file() else []

    def __exit__(self, *exc):
        for pid_file in self._pids:
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        return False
