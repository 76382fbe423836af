"""Shared pieces of the MLflow tests: a real toy study run by Snakemake, and real `mlflow server` processes.

* ``study`` (session): the project's Snakefile on ``parallel.yaml`` with
  ``--cores 4``: four one-thread training jobs log into one sqlite store at
  the same time, as in a user's run; then each run is predicted and evaluated
  on val and test, the modality subset is selected, and the workflow's
  onsuccess hook syncs the outcomes into MLflow. Its cache, splits and
  resolved config also feed the cluster-mode tests.
* :class:`MlflowServer`: ``mlflow server`` on 127.0.0.1 and a free port, in its
  own process group (it forks uvicorn workers) so that stopping it by pid ends
  them all. Its job-execution feature (GenAI background jobs, a handful of
  extra processes) is switched off: the tests do not need it.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
PARALLEL_CONFIG = Path(__file__).with_name("parallel.yaml")
BIN = Path(sys.executable).parent  # snakemake, brainmets and mlflow of this environment

#: The training runs of parallel.yaml (study/model/subset/seed): what Snakemake must run side by side.
TRAINING_RUNS = (
    "modality/unet/t1c/seed0",
    "modality/unet/t1c/seed1",
    "baselines/resunet/t1c+t1n+t2f+t2w/seed0",
    "baselines/resunet/t1c+t1n+t2f+t2w/seed1",
)
#: Splits every run is evaluated on (metrics/<split>.tsv, inference/<split>.tsv).
EVAL_SPLITS = ("val", "test")
#: Files a training job writes whatever happens to tracking.
RUN_FILES = ("config.yaml", "history.tsv", "checkpoint.pt", "model.pt", "model_info.json")


def job_env(**extra: str) -> dict[str, str]:
    """Environment of a job started by a test: no tracking settings leak in from the caller's shell.

    ``MLFLOW_HTTP_REQUEST_*`` are removed so that the project's bounded retry
    defaults (brainmets.tracking.ENV_DEFAULTS) are the ones under test.
    """
    env = {k: v for k, v in os.environ.items()
           if k != "MLFLOW_TRACKING_URI" and not k.startswith("MLFLOW_HTTP_REQUEST_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _offline_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` as a child process group; use as a context manager (stopped also on failure)."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.artifacts = artifacts
        self.command = [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
                        "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
                        "--port", str(self.port), "--workers", "1", *extra]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "MlflowServer":
        """Start and wait until ``/health`` answers; fail with the server's log if it dies or times out."""
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True,
                                            env=job_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mlflow server did not answer within {timeout} s:\n{self.log_tail()}")
            try:  # a bounded wait that ends early if the server exits
                self.process.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"mlflow server exited with {self.process.returncode}:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, not a shutdown) and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after 15 s."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:  # uvicorn workers may outlive the parent: end the rest of the group
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=15)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else "(no log)"

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # REST API ----------------------------------------------------------------------------------

    def request(self, path: str, body: dict | None = None, headers: dict | None = None, **query) -> dict:
        """GET (or POST ``body``) ``path`` and decode the JSON answer."""
        url = f"{self.url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
        with urllib.request.urlopen(req, timeout=30) as answer:
            return json.loads(answer.read() or b"{}")

    def status(self, path: str, headers: dict | None = None) -> int:
        """HTTP status of a GET (errors included)."""
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{self.url}{path}", headers=headers or {}),
                                        timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def experiments(self) -> dict[str, str]:
        """name -> experiment id of every active experiment."""
        found = self.request("/api/2.0/mlflow/experiments/search", body={"max_results": 1000})
        return {e["name"]: e["experiment_id"] for e in found.get("experiments", [])}

    def runs(self, experiment_id: str) -> list[dict]:
        found = self.request("/api/2.0/mlflow/runs/search",
                             body={"experiment_ids": [experiment_id], "max_results": 1000})
        return found.get("runs", [])

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        found = self.request("/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key,
                             max_results=25000)
        return sorted((int(m["step"]), float(m["value"])) for m in found.get("metrics", []))


def tags(run: dict) -> dict[str, str]:
    """Tags of a run as the REST API returns it (a list of key/value pairs)."""
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def history_metrics(history_tsv: Path) -> dict[str, list[tuple[int, float]]]:
    """What a run's MLflow metric history must equal: every finite value of history.tsv, keyed by column."""
    table = pd.read_csv(history_tsv, sep="\t")
    out = {}
    for column in table.columns.drop("iteration"):
        rows = [(int(step), float(value)) for step, value in zip(table["iteration"], table[column])
                if not (isinstance(value, float) and math.isnan(value))]
        if rows:
            out[column] = rows
    return out


# ---------------------------------------------------------------------------------- the study


@dataclass
class Study:
    workdir: Path
    results: Path
    output: str  # Snakemake's stdout + stderr

    @property
    def db(self) -> Path:
        return self.results / "mlflow" / "mlflow.db"

    @property
    def resolved_config(self) -> Path:
        return self.results / "config.resolved.yaml"

    @property
    def cache(self) -> Path:
        return self.results / "data" / "preprocessed"

    @property
    def splits(self) -> Path:
        return self.results / "data" / "splits.tsv"


def training_concurrency(snakemake_output: str) -> int:
    """Most training jobs running at once, from the order of Snakemake's job start and finish lines."""
    events = re.finditer(r"^(?:local)?rule (train_\w+):\n(?:[ \t]+.*\n)*?[ \t]+jobid: (\d+)"
                         r"|^Finished jobid: (\d+) \(Rule: (train_\w+)\)", snakemake_output, re.M)
    running, most = set(), 0
    for event in events:
        if event.group(2) is not None:
            running.add(event.group(2))
            most = max(most, len(running))
        else:
            running.discard(event.group(3))
    return most


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    """Run the toy study's four training jobs, their evaluation and the selection through Snakemake, 4 cores."""
    workdir = tmp_path_factory.mktemp("study")
    targets = [f"results/{run}/metrics/{split}.tsv" for run in TRAINING_RUNS for split in EVAL_SPLITS]
    targets.append("results/selection/modality.json")
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(SNAKEFILE), "-d", str(workdir), "--configfile", str(PARALLEL_CONFIG),
         "--cores", "4", "--printshellcmds", *targets],
        capture_output=True, text=True, timeout=900, env=job_env(),
    )
    output = proc.stdout + proc.stderr
    results = workdir / "results"
    if proc.returncode != 0:
        logs = [f"--- {log}\n{log.read_text(errors='replace')[-2000:]}"
                for log in sorted((results / "logs").rglob("*.log"))] if (results / "logs").is_dir() else []
        raise AssertionError("snakemake failed:\n" + output[-6000:] + "\n" + "\n".join(logs))
    return Study(workdir, results, output)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A cluster-style tracking server: fresh sqlite backend and proxied artifacts in a temporary folder.

    ``--allowed-hosts`` as the README's cluster command sets it, naming the host
    the jobs use (here 127.0.0.1); it replaces MLflow's default list, so
    ``localhost`` is refused (test_cluster.py checks the warning that says so).
    """
    root = tmp_path_factory.mktemp("server")
    server = MlflowServer(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root / "server.log",
                          "--allowed-hosts", "127.0.0.1:*")
    with server:
        yield server
