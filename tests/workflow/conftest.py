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

    def jobs(self) -> list[tuple[str, dict[str, str]]]:
        """Every job block of the output in order: (rule, {field: value}) from
        `rule <name>:` (or `localrule`, `checkpoint`) and its indented `field: value` lines."""
        return [event[1:] for event in self._job_events() if event[0] == "job"]

    def max_cores_in_use(self) -> int:
        """Most cores the jobs held at once, replayed from Snakemake's own job log.

        A job holds its threads (1 unless its block says `threads: N`) from its
        block until `Finished jobid: <id>`. Snakemake prints every job it starts
        in one scheduling round before it handles any job's end, so the replay
        sees what the scheduler allowed, however fast the jobs ran.
        """
        running: dict[str, int] = {}
        peak = 0
        for event in self._job_events():
            if event[0] == "job":
                fields = event[2]
                assert "jobid" in fields, f"job block without a jobid in snakemake output:\n{self.output}"
                running[fields["jobid"]] = int(fields.get("threads", 1))
                peak = max(peak, sum(running.values()))
            else:
                running.pop(event[1])
        return peak

    def _job_events(self) -> list[tuple]:
        events: list[tuple] = []
        block: dict[str, str] | None = None  # fields of the job block being read
        for line in self.output.splitlines():
            if block is not None and (field := re.match(r"^    (\w+): (.*)$", line)):
                block[field.group(1)] = field.group(2)
                continue
            block = None
            if header := re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line):
                block = {}
                events.append(("job", header.group(1), block))
            elif finished := re.match(r"^Finished jobid: (\d+)", line):
                events.append(("finished", finished.group(1)))
        return events


def run_snakemake(workdir: Path, *args: str, timeout: float = 120, snakefile: Path = SNAKEFILE) -> SnakemakeRun:
    """`snakemake -s <snakefile> -d <workdir> ARGS` with this interpreter's snakemake (default: the project's)."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [str(SNAKEMAKE), "-s", str(snakefile), "-d", str(workdir), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    return SnakemakeRun(proc)


@pytest.fixture
def snakemake(tmp_path):
    """Call as snakemake(*args): runs in a fresh working directory (results land there)."""

    def call(*args: str, timeout: float = 120, snakefile: Path = SNAKEFILE) -> SnakemakeRun:
        return run_snakemake(tmp_path, *args, timeout=timeout, snakefile=snakefile)

    call.workdir = tmp_path
    return call
