"""`brainmets tracking sync`: every evaluated run's outcome in its MLflow run, sortable in the UI, never duplicated.

The study fixture already ran the workflow, whose onsuccess hook synced the
four trained and evaluated runs. Here the two-stage model's combined run is
added (its files are a copy of a real evaluation: training a detector and a
segmentor as well would double the fixture's cost for the same file format),
the CLI syncs twice more, and a real ``mlflow server`` on the study's store
answers through its REST API what the UI would show.
"""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

from .conftest import BIN, EVAL_SPLITS, TRAINING_RUNS, MlflowServer, job_env, tags

pytestmark = pytest.mark.xdist_group("tracking")

SCORES = ("legacy_dice", "legacy_hd95", "lesion_dice", "lesion_hd95")
#: The combined two-stage run this module adds: the modality study's choice (t1c), seed 0.
COMBINED = "twostage/combined/selected/seed0"
ORDER_KEY = "test/lesion_dice_avg"


def expected_outcome(run_dir) -> dict[str, float]:
    """What sync must log for a run, computed here from its TSV files with plain pandas."""
    out = {}
    for split in EVAL_SPLITS:
        metrics = pd.read_csv(run_dir / "metrics" / f"{split}.tsv", sep="\t")
        means = metrics.groupby("region")[list(SCORES) + ["num_fp"]].mean()
        for region, row in means.iterrows():
            for score in SCORES:
                out[f"{split}/{score}_{region}"] = row[score]
            out[f"{split}/fp_per_patient_{region}"] = row["num_fp"]
        for score in SCORES:
            out[f"{split}/{score}_avg"] = means.loc[["WT", "TC", "ET"], score].mean()
        inference = pd.read_csv(run_dir / "inference" / f"{split}.tsv", sep="\t")
        out[f"{split}/seconds_per_case"] = inference["seconds"].mean()
    out["val/selection_score"] = out["val/lesion_dice_avg"]  # selection: lesion_dice on val over WT, TC, ET
    return {k: float(v) for k, v in out.items() if pd.notna(v)}


def sync(study) -> str:
    proc = subprocess.run([str(BIN / "brainmets"), "tracking", "sync", "--config", str(study.resolved_config),
                           "--results", str(study.results)], capture_output=True, text=True, env=job_env(),
                          cwd=study.workdir, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def store_snapshot(db) -> dict[tuple[str, str], int]:
    """(run id, metric key) -> number of points in its history, over every run of the store."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    counts = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            for key in run.data.metrics:
                counts[run.info.run_id, key] = len(client.get_metric_history(run.info.run_id, key))
    return counts


@pytest.fixture(scope="module")
def synced(study, tmp_path_factory):
    """The study plus a combined two-stage run and a table, synced twice; a server on its store."""
    combined = study.results / COMBINED
    for folder in ("metrics", "inference"):
        shutil.copytree(study.results / TRAINING_RUNS[0] / folder, combined / folder, dirs_exist_ok=True)
    (study.results / "tables").mkdir(exist_ok=True)
    (study.results / "tables" / "table1_modality.csv").write_text("model,lesion_dice_avg\nunet,1\n")
    first_output = sync(study)
    first = store_snapshot(study.db)
    second_output = sync(study)
    second = store_snapshot(study.db)
    root = tmp_path_factory.mktemp("sync_ui")
    with MlflowServer(f"sqlite:///{study.db}", study.results / "mlflow" / "artifacts", root / "ui.log") as server:
        yield {"server": server, "first": first, "second": second, "outputs": (first_output, second_output)}


def test_the_workflow_synced_the_outcomes_after_its_jobs(study):
    log = (study.results / "logs" / "tracking_sync.log").read_text()
    assert f"{len(TRAINING_RUNS)} of {len(TRAINING_RUNS)} runs have an outcome; 0 without an MLflow run" in log, log
    for run in TRAINING_RUNS:
        assert run in log, log


def test_runs_sort_by_test_lesion_dice_and_hold_the_numbers_of_their_files(study, synced):
    server = synced["server"]
    experiments = server.experiments()
    ids = [experiments[f"brainmets/{s}"] for s in ("modality", "twostage", "baselines")]
    found = server.request("/api/2.0/mlflow/runs/search", body={
        "experiment_ids": ids, "max_results": 100,
        "filter": "tags.role != 'parent'", "order_by": [f"metrics.`{ORDER_KEY}` DESC"]})["runs"]
    assert len(found) == len(TRAINING_RUNS) + 1  # every evaluated run, the combined two-stage one included
    values = [next(m["value"] for m in run["data"]["metrics"] if m["key"] == ORDER_KEY) for run in found]
    assert values == sorted(values, reverse=True)
    for run in found:
        run_dir = study.results / tags(run)["run_dir"]
        logged = {m["key"]: m["value"] for m in run["data"]["metrics"] if "/" in m["key"]}
        expected = expected_outcome(run_dir)
        assert logged.keys() == expected.keys(), run_dir
        assert logged == pytest.approx(expected, rel=1e-12), run_dir


def test_a_second_sync_adds_no_run_and_no_metric_point(study, synced):
    assert synced["second"] == synced["first"]
    assert all(count == 1 for (_, key), count in synced["second"].items() if "/" in key)
    server = synced["server"]
    runs = [r for e in server.experiments().values() for r in server.runs(e)]
    assert len(runs) == 3 + len(TRAINING_RUNS) + 1  # three parents, the trained runs, one combined run


def test_the_combined_two_stage_run_says_selected_and_sits_under_the_twostage_parent(study, synced):
    server = synced["server"]
    runs = server.runs(server.experiments()["brainmets/twostage"])
    combined = [r for r in runs if tags(r)["role"] == "combined"]
    parent = next(r for r in runs if tags(r)["role"] == "parent")
    assert len(combined) == 1
    run = combined[0]
    assert run["info"]["run_name"] == "combined/selected(t1c)/seed0"
    assert tags(run)["subset_alias"] == "selected" and tags(run)["subset"] == "t1c"
    assert tags(run)["mlflow.parentRunId"] == parent["info"]["run_id"]
    assert tags(run)["run_dir"] == str((study.results / COMBINED).resolve())


def test_parents_carry_the_study_summary_and_last_as_long_as_the_study(study, synced):
    server = synced["server"]
    for name, experiment_id in server.experiments().items():
        if not name.startswith("brainmets/"):
            continue
        runs = server.runs(experiment_id)
        parent = next(r for r in runs if tags(r)["role"] == "parent")
        assert parent["info"]["status"] == "FINISHED", name
        children = [r for r in runs if r is not parent]
        if children:  # it ends with its last run, not 20 ms after it started
            assert int(parent["info"]["end_time"]) >= max(int(r["info"]["end_time"]) for r in children), name
        assert tags(parent)["chosen_subset"] == "t1c" and tags(parent)["selection_metric"] == "lesion_dice"
        assert "**t1c**" in tags(parent)["mlflow.note.content"], name
        for folder, files in (("tables", ["tables/table1_modality.csv"]), ("selection", ["selection/modality.json"])):
            listed = server.request(f"/api/2.0/mlflow/artifacts/list?path={folder}&run_id={parent['info']['run_id']}")
            assert [f["path"] for f in listed["files"]] == files, (name, folder)


def test_experiments_are_marked_for_the_runs_table_not_genai_traces(synced):
    server = synced["server"]
    for name, experiment_id in server.experiments().items():
        if name.startswith("brainmets/"):
            experiment = server.request("/api/2.0/mlflow/experiments/get", experiment_id=experiment_id)["experiment"]
            assert {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.experimentKind"] == \
                "custom_model_development", name


def test_a_re_evaluated_run_shows_its_new_value(study, synced):
    """A rewritten metrics file (newer time) becomes the run's latest value; the old one stays in its history."""
    import os

    path = study.results / COMBINED / "metrics" / "test.tsv"
    before = expected_outcome(study.results / COMBINED)[ORDER_KEY]
    table = pd.read_csv(path, sep="\t")
    table["lesion_dice"] = 0.25
    table.to_csv(path, sep="\t", index=False)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    sync(study)
    server = synced["server"]
    run = next(r for r in server.runs(server.experiments()["brainmets/twostage"]) if tags(r)["role"] == "combined")
    latest = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert latest[ORDER_KEY] == 0.25
    history = server.metric_history(run["info"]["run_id"], ORDER_KEY)
    assert sorted(value for _, value in history) == sorted([before, 0.25])
