"""MLflow tracking against a real sqlite store, and with an unreachable tracking server."""

import logging
import socket

import pytest
import yaml

from brainmets.cli import main
from brainmets.training.loop import RunRequest, train


@pytest.fixture(autouse=True)
def _no_outside_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_runs_land_in_the_study_experiment_under_one_parent(tiny_data, tiny_config, tmp_path):
    from mlflow.tracking import MlflowClient

    cache, splits = tiny_data
    results = tmp_path / "results"
    tiny_config.update(results=str(results), tracking={"enabled": True, "uri": None})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config))
    assert main(["tracking", "init", "--config", str(config_path)]) == 0
    assert (results / "mlflow" / "mlflow.db").is_file()

    def run(seed, **kw):
        out = results / "modality" / "unet" / "t1c+t2f" / f"seed{seed}"
        return train(tiny_config, RunRequest("modality", "unet", "t1c+t2f", seed, cache, splits, out,
                                             iterations=3), progress=False, **kw)

    client = MlflowClient(f"sqlite:///{results / 'mlflow' / 'mlflow.db'}")
    run(0)
    run(1, stop_at=2)  # a job stopped before the end ...
    experiment = client.get_experiment_by_name("brainmets/modality")
    stopped = client.search_runs([experiment.experiment_id], filter_string="tags.seed = '1'")
    assert [r.info.status for r in stopped] == ["KILLED"]  # not FAILED: ...
    assert {k: stopped[0].data.tags[k] for k in ("resumable", "stopped_at_iteration", "stopped_by")} == \
        {"resumable": "true", "stopped_at_iteration": "2", "stopped_by": "stop_at"}
    run(1)  # ... resumed: continues its MLflow run

    assert experiment is not None
    assert client.search_runs(["0"]) == []  # nothing in the Default experiment
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "parent"]
    children = sorted((r for r in runs if r.data.tags.get("role") == "child"), key=lambda r: r.data.tags["seed"])
    assert len(parents) == 1 and [c.data.tags["seed"] for c in children] == ["0", "1"]
    for child in children:
        tags, params = child.data.tags, child.data.params
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert (tags["study"], tags["model"], tags["subset"]) == ("modality", "unet", "t1c+t2f")
        assert "slurm_job_id" in tags
        assert params["training.segmentation.iterations"] == "3" and params["seed"] == tags["seed"]
        assert child.info.status == "FINISHED"
        assert tags.get("resumable", "false") == "false"
        losses = client.get_metric_history(child.info.run_id, "loss")
        assert sorted(m.step for m in losses) == [1, 2, 3]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_score")] == [3]
        assert {"config.yaml", "history.tsv"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
    artifact_dir = results / "mlflow" / "artifacts"
    assert any(artifact_dir.rglob("history.tsv"))  # artifacts next to the db, not in the cwd


def test_unreachable_server_warns_once_and_the_run_completes(tiny_data, tiny_config, tmp_path, caplog):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache, splits = tiny_data
    tiny_config["tracking"] = {"enabled": True, "uri": f"http://127.0.0.1:{port}"}
    out = tmp_path / "run"
    caplog.set_level(logging.WARNING, logger="brainmets.tracking")
    result = train(tiny_config, RunRequest("modality", "unet", "t1c+t2f", 0, cache, splits, out, iterations=2),
                   progress=False)
    assert result.status == "trained"
    for name in ("config.yaml", "history.tsv", "checkpoint.pt", "model.pt"):
        assert (out / name).is_file(), name
    warnings = [r for r in caplog.records if r.name == "brainmets.tracking"]
    assert len(warnings) == 1 and "tracking is off for the rest of this run" in warnings[0].getMessage()


def test_a_run_of_the_selected_subset_says_selected_in_its_name(tiny_data, tiny_config, tmp_path):
    from mlflow.tracking import MlflowClient

    cache, splits = tiny_data
    results = tmp_path / "results"
    tiny_config.update(results=str(results), tracking={"enabled": True, "uri": None})
    out = results / "twostage" / "unet" / "selected" / "seed0"
    train(tiny_config, RunRequest("twostage", "unet", "t1c+t2f", 0, cache, splits, out, iterations=1,
                                  subset_alias="selected"), progress=False)
    client = MlflowClient(f"sqlite:///{results / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("brainmets/twostage")
    [run] = client.search_runs([experiment.experiment_id], filter_string="tags.role = 'child'")
    assert run.info.run_name == "unet/selected(t1c+t2f)/seed0"
    assert (run.data.tags["subset"], run.data.tags["subset_alias"]) == ("t1c+t2f", "selected")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
