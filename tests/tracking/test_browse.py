"""`mlflow ui` on a study's own store (the README's "Browsing runs in MLflow" command) serves its runs."""

from __future__ import annotations

import urllib.request

import pytest

from .conftest import TRAINING_RUNS, MlflowServer, history_metrics, tags

pytestmark = pytest.mark.xdist_group("tracking")


def test_mlflow_ui_serves_the_study_runs_metrics_and_artifacts(study, tmp_path):
    artifacts = study.results / "mlflow" / "artifacts"
    server = MlflowServer(f"sqlite:///{study.db}", artifacts, tmp_path / "ui.log")
    server.command[1] = "ui"  # `mlflow ui` takes the same flags as `mlflow server`
    with server:
        experiments = server.experiments()
        assert {"brainmets/modality", "brainmets/twostage", "brainmets/baselines"} <= set(experiments)
        assert server.runs("0") == []  # nothing in "Default"
        # the web UI's own endpoint prefix answers too
        assert server.status("/ajax-api/2.0/mlflow/experiments/search?max_results=10") == 200

        found = {}
        for name in ("modality", "baselines"):
            for run in server.runs(experiments[f"brainmets/{name}"]):
                if tags(run).get("role") == "child":
                    found[tags(run)["run_dir"]] = run
        assert sorted(found) == sorted(str((study.results / run).resolve()) for run in TRAINING_RUNS)

        for run_dir, run in found.items():
            run_id = run["info"]["run_id"]
            history = history_metrics(study.results / run_dir / "history.tsv")
            latest = {m["key"]: (int(m["step"]), float(m["value"])) for m in run["data"]["metrics"]}
            # training curves; the evaluation outcome (val/..., test/...: test_sync.py) is the rest
            assert {k: v for k, v in latest.items() if "/" not in k} == {key: rows[-1] for key, rows in history.items()}
            assert {k.split("/")[0] for k in latest if "/" in k} == {"val", "test"}, run_dir
            assert server.metric_history(run_id, "loss") == history["loss"]
            # artifacts are read from results/mlflow/artifacts: the UI can show history.tsv
            listed = server.request("/api/2.0/mlflow/artifacts/list", run_id=run_id)
            assert {"config.yaml", "history.tsv"} <= {f["path"] for f in listed.get("files", [])}
            with urllib.request.urlopen(f"{server.url}/get-artifact?path=history.tsv&run_uuid={run_id}",
                                        timeout=30) as answer:
                assert answer.read() == (study.results / run_dir / "history.tsv").read_bytes()

        # a Host header that is neither localhost nor a private IP is refused unless --allowed-hosts names it
        assert server.status("/api/2.0/mlflow/experiments/search?max_results=1",
                             headers={"Host": "login01.cluster.example:5000"}) == 403
        assert server.status("/api/2.0/mlflow/experiments/search?max_results=1",
                             headers={"Host": "10.1.2.3:5000"}) == 200
    assert not server.group_alive()  # stopped by pid, uvicorn worker included
