"""A real single-node SLURM cluster for the profile test: stood up by the project's own
scripts/cluster/slurm_up.sh, stopped by slurm_down.sh (pid files) whatever the test's outcome.

The cluster needs root (daemons, apt-get for missing packages). Where that is not available the
test FAILS naming what is missing: a silently skipped cluster test proves nothing. A machine that
deliberately cannot run it (a laptop without root) opts out with BRAINMETS_SKIP_SLURM_TEST=1.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_UP = REPO / "scripts" / "cluster" / "slurm_up.sh"
SLURM_DOWN = REPO / "scripts" / "cluster" / "slurm_down.sh"
#: Outside pytest's 0700 tmp root: munged and MariaDB run as their own users and must reach it.
SLURM_DIR = Path("/tmp/brainmets-slurm-test")
#: Two pytest sessions on one machine (CI and a developer, two engineers) share the fixed
#: directory and ports: the second waits for the first.
LOCK_FILE = Path("/tmp/brainmets-slurm-test.lock")
#: Ports 6917-6920: clear of a cluster started by hand with the script's defaults (6817-6820).
PORT_BASE = "6917"
#: apt-get install of the packages on a fresh machine included.
UP_TIMEOUT_S = 600
OPT_OUT = "BRAINMETS_SKIP_SLURM_TEST"


@dataclass(frozen=True)
class SlurmCluster:
    slurm_dir: Path
    slurm_conf: Path
    partition: str = "debug"
    #: sacctmgr creates the account `root` (with user root) together with the cluster.
    account: str = "root"

    def env(self) -> dict[str, str]:
        """This process's environment pointed at the cluster, without a surrounding job's SLURM_*."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.slurm_conf)
        return env

    def log_tails(self, lines: int = 30) -> str:
        """The end of every daemon log, for failure messages."""
        parts = []
        for log in sorted((self.slurm_dir / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()
            parts.append(f"--- {log}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


def _missing_prerequisites() -> list[str]:
    """What this machine lacks to stand up the cluster (empty: it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (slurm_up.sh starts slurmctld, slurmd, slurmdbd, MariaDB; running as uid {os.geteuid()})")
    have_packages = all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "slurmdbd", "sbatch", "munged", "mariadbd"))
    if not have_packages and shutil.which("apt-get") is None:
        missing.append("apt-get (to install munge slurmctld slurmd slurm-client slurmdbd mariadb-server), "
                       "or those Debian packages installed")
    if shutil.which("timeout") is None:
        missing.append("coreutils `timeout`")
    return missing


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node cluster (partition `debug`, accounting on); stopped afterwards."""
    if os.environ.get(OPT_OUT) == "1":
        pytest.skip(f"{OPT_OUT}=1: the real SLURM test was switched off on this machine")
    missing = _missing_prerequisites()
    if missing:
        pytest.fail("cannot stand up the test SLURM cluster; missing: " + "; ".join(missing)
                    + f" (set {OPT_OUT}=1 to switch this test off deliberately)", pytrace=False)

    with open(LOCK_FILE, "w") as lock:
        # Blocks while another session runs its cluster test (each is bounded by timeouts; the
        # lock goes with its process).
        fcntl.flock(lock, fcntl.LOCK_EX)
        cluster = SlurmCluster(SLURM_DIR, SLURM_DIR / "etc" / "slurm.conf")
        env = dict(os.environ, SLURM_DIR=str(SLURM_DIR), SLURM_PORT_BASE=PORT_BASE, WITH_ACCOUNTING="1")
        try:
            up = subprocess.run(["bash", str(SLURM_UP)], env=env, capture_output=True, text=True,
                                timeout=UP_TIMEOUT_S)
            if up.returncode != 0:
                pytest.fail(f"scripts/cluster/slurm_up.sh failed (exit {up.returncode}):\n"
                            f"{up.stdout[-3000:]}\n{up.stderr[-6000:]}", pytrace=False)
            yield cluster
        finally:
            # By pid files, on success and on failure alike; the logs stay for inspection.
            subprocess.run(["bash", str(SLURM_DOWN)], env=env, capture_output=True, text=True, timeout=120)

