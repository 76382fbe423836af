"""The MLflow server is down for a whole training job: the job completes and its files are complete.

Files are the truth, MLflow mirrors them (tracking.py). Here `brainmets train`
runs with tracking enabled and ``MLFLOW_TRACKING_URI`` pointing at a port on
which nothing listens (connections are refused at once, as when a server
has died). tests/training/test_tracking.py covers the tracker's own behaviour
in process; this is the user's view through the CLI.
"""

from __future__ import annotations

import socket

import pandas as pd
import torch

from reliability_helpers import clean_env, full_config, run_cli  # registered by conftest.py

ITERATIONS = 6


def _closed_port() -> int:
    """A local TCP port with no listener (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_training_completes_with_the_tracking_server_down(trained, tmp_path):
    config = full_config(tmp_path / "config.yaml", tracking={"enabled": True})
    out = tmp_path / "run"
    uri = f"http://127.0.0.1:{_closed_port()}"

    proc = run_cli("train", "--config", config, "--study", "modality", "--model", "unet", "--subset", "t1c",
                   "--seed", "0", "--cache", trained.cache, "--splits", trained.splits, "--out-dir", out,
                   "--iterations", str(ITERATIONS), "--no-progress", env=clean_env(MLFLOW_TRACKING_URI=uri))

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert uri in proc.stderr and "tracking" in proc.stderr.lower(), "the outage was not reported:\n" + proc.stderr
    # every file of a finished run, complete
    for name in ("config.yaml", "history.tsv", "checkpoint.pt", "model.pt", "model_info.json"):
        assert (out / name).stat().st_size > 0, name
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert history["iteration"].tolist() == list(range(1, ITERATIONS + 1))
    assert history["loss"].notna().all()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == ITERATIONS
    model = torch.load(out / "model.pt", weights_only=True)
    assert model["info"]["iteration"] == ITERATIONS
