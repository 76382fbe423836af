"""Four training jobs run side by side by Snakemake against the per-results sqlite store lose nothing.

The races this guards against (../shared/notes/mlflow.md): jobs creating a new
sqlite database at once crash, and jobs creating one experiment at once can put
a run into "Default". The workflow's onstart hook creates the store, the
experiments and the parent runs first; the jobs then only add child runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import TRAINING_RUNS, history_metrics, training_concurrency

pytestmark = pytest.mark.xdist_group("tracking")


def test_snakemake_ran_the_training_jobs_side_by_side(study):
    assert training_concurrency(study.output) >= 4, study.output[-4000:]
    commands = re.findall(r"^Shell command: (?:exec )?(brainmets train .*)$", study.output, re.M)
    assert len(commands) == len(TRAINING_RUNS)
    assert all(" --threads 1 " in command for command in commands), commands


def test_every_run_and_every_metric_is_in_the_store_under_one_parent_per_study(study):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    # one store per results directory, made by the onstart hook before the jobs; nothing in the cwd
    assert study.db.is_file()
    init_log = (study.results / "logs" / "tracking_init.log").read_text()
    assert f"sqlite:///{study.db}: experiment brainmets/modality" in init_log, init_log
    assert not (study.workdir / "mlflow.db").exists() and not (study.workdir / "mlruns").exists()

    client = MlflowClient(f"sqlite:///{study.db}")
    assert client.search_runs(["0"], run_view_type=ViewType.ALL) == []  # nothing in "Default"
    expected = {name: sorted(str((study.results / run).resolve()) for run in TRAINING_RUNS
                             if run.startswith(f"{name}/"))
                for name in ("modality", "twostage", "baselines")}

    for name, run_dirs in expected.items():
        experiment = client.get_experiment_by_name(f"brainmets/{name}")
        assert experiment is not None, name
        assert experiment.artifact_location == (study.results / "mlflow" / "artifacts" / name).as_uri()
        # no duplicate parents were made and deleted: the races never happened
        assert client.search_runs([experiment.experiment_id], run_view_type=ViewType.DELETED_ONLY) == []
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if r.data.tags.get("role") == "parent"]
        children = [r for r in runs if r.data.tags.get("role") == "child"]
        combined = [r for r in runs if r.data.tags.get("role") == "combined"]  # two-stage models: test_sync.py
        assert len(parents) == 1 and len(parents) + len(children) + len(combined) == len(runs), name
        parent = parents[0]
        assert sorted(c.data.tags["run_dir"] for c in children) == run_dirs, name

        for child in children:
            run_dir = Path(child.data.tags["run_dir"])
            study_name, model, subset, seed = run_dir.relative_to(study.results.resolve()).parts
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert (child.data.tags["study"], child.data.tags["model"], child.data.tags["subset"],
                    "seed" + child.data.tags["seed"]) == (study_name, model, subset, seed)
            assert child.info.status == "FINISHED"
            assert child.info.start_time >= parent.info.start_time  # the parent existed before the job

            # every metric row of history.tsv, step by step and value by value
            expected_metrics = history_metrics(run_dir / "history.tsv")
            assert {"loss", "lr", "seconds", "val_score"} <= set(expected_metrics)
            curves = {key for key in child.data.metrics if "/" not in key}  # val/..., test/...: the outcome
            assert curves == set(expected_metrics), child.info.run_name
            for key, rows in expected_metrics.items():
                logged = sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, key))
                assert logged == rows, (child.info.run_name, key)
            assert len(expected_metrics["loss"]) == 8 and len(expected_metrics["val_score"]) == 2

            # artifacts next to the store, not in the working directory
            assert {"config.yaml", "history.tsv"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
            assert child.info.artifact_uri.startswith((study.results / "mlflow" / "artifacts").as_uri())
