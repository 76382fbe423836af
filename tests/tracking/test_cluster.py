"""Cluster mode: jobs log to the tracking server named by MLFLOW_TRACKING_URI, and survive its absence.

The server here is the one the README's "Tracking on a cluster" starts: sqlite
backend on local disk, proxied artifacts, ``--workers 1``; the jobs are real
``brainmets`` processes with nothing but the environment variable pointing
them at it.
"""

from __future__ import annotations

import logging
import subprocess
import time

import pytest
import yaml

from .conftest import BIN, RUN_FILES, MlflowServer, free_port, history_metrics, job_env, tags

pytestmark = pytest.mark.xdist_group("tracking")

#: A bounded job finishes in well under a minute here; MLflow's own retry defaults would hold each
#: failing call for about four minutes, so this limit tells the two apart without timing anything.
JOB_TIMEOUT = 200


def _train_command(study, out_dir, seed: int) -> list[str]:
    return [str(BIN / "brainmets"), "train", "--config", str(study.resolved_config), "--study", "modality",
            "--model", "unet", "--subset", "t1c", "--seed", str(seed), "--cache", str(study.cache),
            "--splits", str(study.splits), "--out-dir", str(out_dir), "--threads", "1", "--no-progress"]


def test_jobs_log_to_the_server_named_by_the_environment(study, tracking_server, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from brainmets.cli import main

    # what the workflow's onstart hook runs (in this process: the jobs below are the real processes)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    assert main(["tracking", "init", "--config", str(study.resolved_config), "--study", "modality"]) == 0
    assert f"{tracking_server.url}: experiment brainmets/modality" in capsys.readouterr().out

    # two training jobs at once, told where to log by the environment only
    env = job_env(MLFLOW_TRACKING_URI=tracking_server.url)
    out_dirs = {seed: tmp_path / "modality" / "unet" / "t1c" / f"seed{seed}" for seed in (0, 1)}
    jobs = [subprocess.Popen(_train_command(study, out, seed), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env, cwd=study.workdir) for seed, out in out_dirs.items()]
    try:
        outputs = [job.communicate(timeout=JOB_TIMEOUT)[0] for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    for job, output in zip(jobs, outputs):
        assert job.returncode == 0, output
        assert "tracking is off" not in output, output

    experiments = tracking_server.experiments()
    assert tracking_server.runs("0") == []
    runs = tracking_server.runs(experiments["brainmets/modality"])
    parents = [r for r in runs if tags(r)["role"] == "parent"]
    children = {tags(r)["run_dir"]: r for r in runs if tags(r)["role"] == "child"}
    assert len(parents) == 1 and len(runs) == 3
    assert sorted(children) == sorted(str(out.resolve()) for out in out_dirs.values())
    for run_dir, run in children.items():
        assert tags(run)["mlflow.parentRunId"] == parents[0]["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED"
        for key, rows in history_metrics(tmp_path / run_dir / "history.tsv").items():
            assert tracking_server.metric_history(run["info"]["run_id"], key) == rows, (run_dir, key)
        # artifacts go through the server (mlflow-artifacts:/) into its --artifacts-destination
        assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:")
        listed = tracking_server.request("/api/2.0/mlflow/artifacts/list", run_id=run["info"]["run_id"])
        assert {"config.yaml", "history.tsv"} <= {f["path"] for f in listed.get("files", [])}
    assert len(list(tracking_server.artifacts.rglob("history.tsv"))) == 2

    # the environment variable won: the study's own sqlite store got none of these runs
    local = MlflowClient(f"sqlite:///{study.db}")
    local_dirs = {r.data.tags.get("run_dir") for e in local.search_experiments()
                  for r in local.search_runs([e.experiment_id], max_results=1000)}
    assert not local_dirs & set(children)


def test_unreachable_server_costs_a_warning_not_the_run(study, tmp_path, monkeypatch, capsys):
    """A closed port: `tracking init` fails naming the URI; training finishes with all its files."""
    from brainmets.cli import main

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["tracking", "init", "--config", str(study.resolved_config)]) == 2
    error = capsys.readouterr().err
    assert f"could not initialise the MLflow store at {uri}" in error and "Traceback" not in error, error

    env = job_env(MLFLOW_TRACKING_URI=uri)
    out = tmp_path / "run"
    began = time.perf_counter()
    job = subprocess.run(_train_command(study, out, 0), capture_output=True, text=True, env=env,
                         cwd=study.workdir, timeout=JOB_TIMEOUT)
    elapsed = time.perf_counter() - began
    assert job.returncode == 0, job.stderr
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert len(history_metrics(out / "history.tsv")["loss"]) == 8
    assert job.stderr.count("MLflow tracking is off for the rest of this run") == 1, job.stderr
    print(f"training with an unreachable tracking server: {elapsed:.1f} s")


def test_server_killed_while_a_job_logs(study, tmp_path, monkeypatch, caplog):
    """The server dies after the job's first metrics arrived: the job warns once and still finishes."""
    from brainmets.config import load_config
    from brainmets.tracking import RunTracker
    from brainmets.training.loop import RunRequest, train

    server = MlflowServer(f"sqlite:///{tmp_path / 'doomed.db'}", tmp_path / "artifacts", tmp_path / "server.log")
    with server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        seen_before_kill = []
        flush = RunTracker.flush

        def flush_then_crash(tracker):
            sending = tracker.enabled and bool(tracker._pending)
            flush(tracker)
            if sending and tracker.enabled and server.process.poll() is None:
                seen_before_kill.extend(step for step, _ in server.metric_history(tracker.run_id, "loss"))
                server.kill()  # SIGKILL to the whole server, between two batches of this job's metrics

        monkeypatch.setattr(RunTracker, "flush", flush_then_crash)
        caplog.set_level(logging.WARNING, logger="brainmets.tracking")
        out = tmp_path / "run"
        began = time.perf_counter()
        result = train(load_config(study.resolved_config),
                       RunRequest("modality", "unet", "t1c", 5, study.cache, study.splits, out), progress=False)
        elapsed = time.perf_counter() - began
        assert not server.group_alive()
    assert seen_before_kill == [1, 2, 3]  # the job was logging to the live server (first checkpoint)
    assert result.status == "trained"
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert len(history_metrics(out / "history.tsv")["loss"]) == 8
    warnings = [r.getMessage() for r in caplog.records if r.name == "brainmets.tracking"]
    assert len(warnings) == 1 and "could not log metrics to MLflow" in warnings[0], warnings
    print(f"training whose tracking server was killed mid-run: {elapsed:.1f} s")


def test_a_refused_host_header_names_the_fix(study, tracking_server, tmp_path, caplog, capsys):
    """Jobs reaching the server by a name its --allowed-hosts lacks get 403: the messages say what to add."""
    from brainmets.cli import main
    from brainmets.tracking import RunTracker

    uri = tracking_server.url.replace("127.0.0.1", "localhost")  # same server, a Host header it refuses
    host = uri.split("//", 1)[1]
    caplog.set_level(logging.WARNING, logger="brainmets.tracking")
    tracker = RunTracker.start(uri, study="modality", model="unet", subset="t1c", seed=0, run_dir=tmp_path,
                               params={})
    assert not tracker.enabled
    warnings = [r.getMessage() for r in caplog.records if r.name == "brainmets.tracking"]
    assert len(warnings) == 1 and "403" in warnings[0] and f"--allowed-hosts listing {host}" in warnings[0]

    settings = yaml.safe_load(study.resolved_config.read_text())
    settings["tracking"]["uri"] = uri
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    assert main(["tracking", "init", "--config", str(config), "--study", "modality"]) == 2
    assert f"--allowed-hosts listing {host}" in capsys.readouterr().err

