"""Run the project's Snakemake (the one installed next to this Python) on the real Snakefile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


class SnakemakeRun:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.output = proc.stdout + proc.stderr

    def job_counts(self) -> dict[str, int]:
        """The first 'Job stats' table of the output (the DAG known before any checkpoint runs)."""
        match = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s+(\d+)", self.output, re.S)
        assert match, f"no job stats in snakemake output:\n{self.output}"
        counts = {}
        for line in match.group(1).splitlines():
            name, count = line.split()
            counts[name] = int(count)
        counts["total"] = int(match.group(2))
        return counts


def run_snakemake(workdir: Path, *args: str, timeout: float = 120) -> SnakemakeRun:
    """`snakemake -s <repo>/Snakefile -d <workdir> ARGS` with this interpreter's snakemake."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [str(SNAKEMAKE), "-s", str(SNAKEFILE), "-d", str(workdir), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    return SnakemakeRun(proc)


@pytest.fixture
def snakemake(tmp_path):
    """Call as snakemake(*args): runs in a fresh working directory (results land there)."""

    def call(*args: str, timeout: float = 120) -> SnakemakeRun:
        return run_snakemake(tmp_path, *args, timeout=timeout)

    call.workdir = tmp_path
    return call
