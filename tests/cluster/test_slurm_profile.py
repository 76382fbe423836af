"""The SLURM profile (workflow/profiles/slurm) on a real SLURM controller.

A reduced study (tests/cluster/reduced.yaml) runs to completion through the profile on a
single-node SLURM 22.05 cluster with accounting (conftest.py), with the test's site overrides:
partition `debug`, account `root`, no GPU (the node has none), short status-check intervals. Then:
- every Snakemake job that is not a local rule went through SLURM: the accounting database
  holds exactly one COMPLETED job per such Snakemake job, named after this Snakemake run, in
  the requested partition and account, with the rule in its comment; the SLURM job ids are the ones
  Snakemake reported at submission;
- the local rules ran on the submit host, not in SLURM;
- the results have the same files (relative paths) as a local `--cores 2` run of the same study.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

# One pytest-xdist worker for the whole file: the cluster fixture is per worker session and holds a
# machine-wide lock until that session ends, so a second worker would wait out the first one's run.
pytestmark = pytest.mark.xdist_group("slurm")

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
PROFILE_DIR = REPO / "workflow" / "profiles" / "slurm"
PROFILE = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
REDUCED = REPO / "tests" / "cluster" / "reduced.yaml"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
#: Wall-clock bounds of the two runs (s); `timeout -k 10` kills a hung Snakemake for sure.
SLURM_RUN_TIMEOUT_S = 540
LOCAL_RUN_TIMEOUT_S = 360

TRAINING_RULES = {"train_modality", "train_detector", "train_segmentor", "train_baseline"}
PREDICTION_RULES = {"predict_twostage", "ensemble"}  # single-pass runs predict in their training job
CPU_RULES = {"synthesise", "index", "preprocess", "preprocess_case"}


# --------------------------------------------------------------------------- the profile itself


def _workflow_rules() -> set[str]:
    names = set()
    for smk in [SNAKEFILE, *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = smk.read_text()
        names |= set(re.findall(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", text, re.M))
        names |= set(re.findall(r"^\s*use\s+rule\s+\w+\s+as\s+(\w+)", text, re.M))  # inherited rules
    return names


def test_profile_asks_gpus_for_training_and_prediction_only():
    resources = PROFILE["set-resources"]
    unknown = set(resources) - _workflow_rules()
    assert not unknown, f"set-resources of {PROFILE_DIR}/config.yaml name rules the workflow lacks: {unknown}"
    for rule in TRAINING_RULES | PREDICTION_RULES:
        assert resources.get(rule, {}).get("gpu", 0) >= 1, f"{rule} asks for no GPU"
        assert resources[rule].get("slurm_partition"), f"{rule} has no partition"
    for rule in CPU_RULES:
        assert not resources.get(rule, {}).get("gpu"), f"{rule} is CPU-only but asks for a GPU"
    assert PROFILE["default-resources"]["slurm_partition"], "no default partition"
    assert PROFILE["executor"] == "slurm"
    assert PROFILE["slurm-status-command"] in {"sacct", "squeue"}
    assert PROFILE["retries"] >= 1 and PROFILE["rerun-incomplete"] is True


# --------------------------------------------------------------------------- the real cluster


def _resource_value(value) -> str:
    # --default-resources evaluates values as Python expressions: strings need quotes.
    return repr(value) if isinstance(value, str) else str(value)


def site_overrides(partition: str, account: str, signal_lead_s: int = 30) -> list[str]:
    """The profile's resources with this cluster's partition and account and no GPU, as flags.

    On the command line --default-resources and --set-resources replace the profile's whole
    setting, so the profile's values are carried over and only the site settings swapped; a
    rule added to the profile is covered without touching this test. The warning signal comes
    signal_lead_s before the time limit (the profile's 300 s exceed the test's 3-minute jobs).
    """
    defaults = {**PROFILE["default-resources"], "slurm_partition": partition, "slurm_account": account}
    per_rule = []
    for rule, resources in PROFILE["set-resources"].items():
        resources = {key: value for key, value in resources.items() if key not in {"gres", "gpu_model", "constraint"}}
        resources["slurm_partition"] = partition
        if "gpu" in resources:
            resources["gpu"] = 0
        if "slurm_extra" in resources:
            resources["slurm_extra"] = re.sub(r"(--signal=\w+)@\d+", rf"\1@{signal_lead_s}", resources["slurm_extra"])
        per_rule += [f"{rule}:{key}={value}" for key, value in resources.items()]
    return [
        "--default-resources", *[f"{key}={_resource_value(value)}" for key, value in defaults.items()],
        "--set-resources", *per_rule,
        # A small study: check soon and often (the profile's 30 s suit day-long jobs).
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "2",
        # One node, one file system: outputs are there when the job ends. A failure fails now.
        "--latency-wait", "5",
        "--retries", "0",
    ]


def snakemake_command(workdir: Path, args: list[str], timeout_s: int) -> list[str]:
    """The project's snakemake on the real Snakefile and the reduced study, killed for sure after timeout_s."""
    return ["timeout", "-k", "10", str(timeout_s), str(SNAKEMAKE), "-s", str(SNAKEFILE), "-d", str(workdir),
            "--configfile", str(REDUCED), *args]


def snakemake_env(env: dict[str, str]) -> dict[str, str]:
    env = dict(env, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    # Jobs inherit this PATH (sbatch --export=ALL): their snakemake and brainmets are this venv's.
    env["PATH"] = f"{SNAKEMAKE.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def job_stats(output: str) -> Counter:
    """Snakemake's first 'Job stats' table: every job of the run, by rule."""
    match = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s+\d+", output, re.S)
    assert match, f"no job stats in the snakemake output:\n{output[-4000:]}"
    return Counter({name: int(count) for name, count in (line.split() for line in match.group(1).splitlines())})


def result_files(workdir: Path) -> set[str]:
    return {str(path.relative_to(workdir)) for path in (workdir / "results").rglob("*") if path.is_file()}


def sacct_jobs(cluster, job_name: str) -> list[dict[str, str]]:
    """Accounting records (allocations, not steps) of every job named job_name."""
    fields = ["JobIDRaw", "JobName", "Comment", "State", "Partition", "Account", "ExitCode"]
    since = f"{datetime.now() - timedelta(days=1):%Y-%m-%dT%H:%M}"
    listing = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "--allusers", "--starttime", since,
         "--name", job_name, "--format", ",".join(fields)],
        capture_output=True, text=True, env=cluster.env(), timeout=60, check=True,
    ).stdout
    return [dict(zip(fields, line.split("|"))) for line in listing.splitlines() if line]


def rule_of(comment: str, rules: set[str]) -> str:
    """The rule a SLURM job ran, from the plugin's comment `rule_<name>[_wildcards_<values>]`."""
    for rule in rules:
        if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"):
            return rule
    raise AssertionError(f"SLURM job comment {comment!r} names none of the rules {sorted(rules)}")


@pytest.mark.slow
def test_reduced_study_runs_through_slurm(slurm_cluster, tmp_path):
    env = snakemake_env(slurm_cluster.env())
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    local_dir.mkdir()

    # The local reference runs alongside: the SLURM run spends much of its time waiting
    # (submission, status checks, job start-up), so the two together take little longer than one.
    local_log = local_dir / "snakemake.out"
    with open(local_log, "w") as out:
        local = subprocess.Popen(snakemake_command(local_dir, ["--cores", "2"], LOCAL_RUN_TIMEOUT_S),
                                 stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    try:
        run = subprocess.run(
            snakemake_command(slurm_dir, ["--workflow-profile", str(PROFILE_DIR),
                                          *site_overrides(slurm_cluster.partition, slurm_cluster.account)],
                              SLURM_RUN_TIMEOUT_S),
            capture_output=True, text=True, env=env, cwd=REPO, timeout=SLURM_RUN_TIMEOUT_S + 30,
        )
        local_status = local.wait(timeout=LOCAL_RUN_TIMEOUT_S + 30)
    finally:
        if local.poll() is None:  # the test failed while the local run was still going
            os.killpg(local.pid, signal.SIGKILL)
            local.wait()
    output = run.stdout + run.stderr
    assert run.returncode == 0, _failure_report(run, slurm_dir, slurm_cluster)
    assert local_status == 0, f"local run failed (exit {local_status}):\n{local_log.read_text()[-6000:]}"

    # --- the jobs went through SLURM
    stats = job_stats(output)
    local_jobs = Counter(re.findall(r"^localrule (\w+):", output, re.M))
    remote_jobs = stats - local_jobs
    assert local_jobs == Counter({"all": 1, "split": 1, "select_subset": 1, "tables": 1, "figures": 1}), local_jobs
    # data (3), trainings (3; the single-pass one also predicts and evaluates), predict_twostage (also
    # evaluates): no evaluation job of its own
    assert sum(remote_jobs.values()) == 7, remote_jobs

    run_id = re.search(r"SLURM run ID: (\S+)", output)
    assert run_id, output[-4000:]
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    records = sacct_jobs(slurm_cluster, run_id.group(1))
    assert {record["JobIDRaw"] for record in records} == submitted, (records, submitted)
    assert Counter(rule_of(record["Comment"], set(stats)) for record in records) == remote_jobs, records
    for record in records:
        assert record["State"] == "COMPLETED" and record["ExitCode"] == "0:0", record
        assert record["Partition"] == slurm_cluster.partition, record
        assert record["Account"] == slurm_cluster.account, record

    # --- the same results as the local run
    slurm_files, local_files = result_files(slurm_dir), result_files(local_dir)
    assert slurm_files == local_files, (
        f"only in the SLURM run: {sorted(slurm_files - local_files)}\n"
        f"only in the local run: {sorted(local_files - slurm_files)}"
    )
    assert {"results/selection/modality.json", "results/tables/table1_modality.csv",
            "results/modality/unet/t1c/seed0/model.pt"} <= slurm_files
    split = "results/data/splits.tsv"
    assert (slurm_dir / split).read_text() == (local_dir / split).read_text()


def _failure_report(run: subprocess.CompletedProcess, workdir: Path, cluster) -> str:
    """Snakemake's output, the SLURM job logs it kept (failed jobs) and the daemons' logs."""
    parts = [f"exit {run.returncode} (124/137: killed by timeout)", (run.stdout + run.stderr)[-8000:]]
    for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        parts.append(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}")
    parts.append(cluster.log_tails())
    return "\n".join(parts)


# --------------------------------------------------------------------------- chains of training jobs

CHAIN = REPO / "tests" / "cluster" / "chain.yaml"
MODEL = "results/modality/unet/t1c/seed0/model.pt"
RUN_DIR = "results/modality/unet/t1c/seed0"
#: Seconds of training steps, at the speed measured just before, that the chained training
#: needs: twice the most a 3-minute job warned 60 s ahead can train (120 s), so that the run
#: outlasts one job even on a machine that turns twice as fast as measured.
CHAIN_TRAINING_S = 240
#: The timed local run: steady speed between these iterations (the first steps warm up).
CALIBRATION_ITERATIONS = (100, 300)
#: The data jobs, one cancelled job, then jobs that may train as little as ~20 s each
#: (warned up to 60 s early, 10-40 s starting): a bound for a hung run, not an expected time.
CHAIN_RUN_TIMEOUT_S = 2400
#: Polls of a running Snakemake (each bounded by its own timeout), every POLL_S seconds.
POLL_S = 1.0


def test_profile_chains_trainings():
    """Every training rule gets the early SIGTERM and its own resubmission count."""
    rules = set(PROFILE["preemptible-rules"])
    assert rules == TRAINING_RULES, rules
    assert PROFILE["preemptible-retries"] >= 1
    for rule in TRAINING_RULES:
        extra = PROFILE["set-resources"][rule].get("slurm_extra", "")
        # TERM: the step's Snakemake dies on USR1 before the training has saved (README).
        assert re.search(r"--signal=TERM@\d+", extra), (rule, extra)


def _chain_command(workdir: Path, cluster, configs: list[Path], extra: list[str], timeout_s: int) -> list[str]:
    return snakemake_command(
        workdir,
        ["--workflow-profile", str(PROFILE_DIR), "--configfile", str(REDUCED), *map(str, configs),
         *site_overrides(cluster.partition, cluster.account, signal_lead_s=60), *extra, MODEL],
        timeout_s,
    )


def prepare_chain_data(workdir: Path, env: dict[str, str]) -> None:
    """Synthesise, preprocess and split the chain study's cohort locally in ``workdir`` (no training)."""
    prepared = subprocess.run(
        snakemake_command(workdir, ["--configfile", str(REDUCED), str(CHAIN), "--cores", "2",
                                    "results/data/preprocessed.done", "results/data/splits.tsv"],
                          LOCAL_RUN_TIMEOUT_S),
        capture_output=True, text=True, env=env, cwd=REPO, timeout=LOCAL_RUN_TIMEOUT_S + 30)
    assert prepared.returncode == 0, (prepared.stdout + prepared.stderr)[-6000:]


def calibrated_iterations(workdir: Path, env: dict[str, str], scratch: Path) -> int:
    """Iterations (in hundreds) whose training steps take CHAIN_TRAINING_S on this machine now.

    The chain's training (workdir's resolved config, one thread as in its jobs, no MLflow)
    runs locally for CALIBRATION_ITERATIONS[1] iterations on workdir's prepared data; its
    history.tsv times the steps. Data loading and checkpoints are outside that time, so the
    estimate errs toward more iterations: a longer chain, never a shorter one.
    """
    config = yaml.safe_load((workdir / "results" / "config.resolved.yaml").read_text())
    config["tracking"]["enabled"] = False
    (scratch / "config.yaml").write_text(yaml.safe_dump(config))
    first, last = CALIBRATION_ITERATIONS
    timed = subprocess.run(
        [str(SNAKEMAKE.parent / "brainmets"), "train", "--config", str(scratch / "config.yaml"),
         "--study", "modality", "--model", "unet", "--subset", "t1c", "--seed", "0",
         "--cache", str(workdir / "results" / "data" / "preprocessed"),
         "--splits", str(workdir / "results" / "data" / "splits.tsv"), "--out-dir", str(scratch / "run"),
         "--iterations", str(last), "--threads", "1", "--no-progress"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=LOCAL_RUN_TIMEOUT_S)
    assert timed.returncode == 0, (timed.stdout + timed.stderr)[-6000:]
    rows = [line.split("\t") for line in (scratch / "run" / "history.tsv").read_text().splitlines()]
    seconds = {int(row[0]): float(row[rows[0].index("seconds")]) for row in rows[1:]}
    per_second = (last - first) / (seconds[last] - seconds[first])
    return 100 * math.ceil(CHAIN_TRAINING_S * per_second / 100)


def _training_jobs(cluster, output: str) -> list[dict[str, str]]:
    """Accounting records of the run's train_modality jobs, oldest first."""
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    assert run_id, output[-4000:]
    records = [r for r in sacct_jobs(cluster, run_id.group(1)) if r["Comment"].startswith("rule_train_modality")]
    return sorted(records, key=lambda record: int(record["JobIDRaw"]))


def _history_iterations(run_dir: Path) -> list[int]:
    history = run_dir / "history.tsv"
    if not history.is_file():
        return []
    return [int(line.split("\t")[0]) for line in history.read_text().splitlines()[1:] if line]


@pytest.mark.slow
def test_training_longer_than_the_time_limit_finishes_through_a_chain_of_jobs(slurm_cluster, tmp_path):
    """3-minute jobs with the warning 60 s ahead; the first job is scancel'ed mid-run (preemption).

    The training is sized on this machine (calibrated_iterations) to outlast a job after the
    preemption, so the chain goes through the warning at least once whatever the CPU's speed.
    It resumes each time from checkpoint.pt and ends with the weights of an uninterrupted
    local run, bit for bit; history.tsv has every row once; MLflow holds one run.
    """
    import mlflow
    import torch

    from brainmets.tracking import experiment_name

    env = snakemake_env(slurm_cluster.env())
    slurm_dir, local_dir, scratch = tmp_path / "slurm", tmp_path / "local", tmp_path / "calibration"
    local_dir.mkdir()
    scratch.mkdir()
    prepare_chain_data(local_dir, env)
    iterations = calibrated_iterations(local_dir, env, scratch)
    sized = tmp_path / "iterations.yaml"
    sized.write_text(yaml.safe_dump({"training": {"segmentation": {"iterations": iterations}}}))

    local_log = local_dir / "snakemake.out"
    with open(local_log, "w") as out:
        local = subprocess.Popen(
            snakemake_command(local_dir, ["--configfile", str(REDUCED), str(CHAIN), str(sized), "--cores", "1",
                                          MODEL], CHAIN_RUN_TIMEOUT_S),
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    slurm_dir.mkdir()
    slurm_log = slurm_dir / "snakemake.out"
    with open(slurm_log, "w") as out:
        # squeue: with sacct, plugin 2.8.0 never sees a cancelled job end (README, "Preemption").
        chain = subprocess.Popen(_chain_command(slurm_dir, slurm_cluster, [CHAIN, sized],
                                                ["--preemptible-retries", "20", "--slurm-status-command", "squeue"],
                                                CHAIN_RUN_TIMEOUT_S),
                                 stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    try:
        # Preemption: cancel the first training job once it has written a checkpoint and moved on.
        cancelled = None
        for _ in range(int(CHAIN_RUN_TIMEOUT_S / POLL_S)):
            if chain.poll() is not None:
                break
            if max(_history_iterations(slurm_dir / RUN_DIR), default=0) > 100:
                running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True,
                                         text=True, env=slurm_cluster.env(), timeout=30, check=True).stdout
                jobs = [line.split()[0] for line in running.splitlines() if "rule_train_modality" in line]
                if jobs:
                    cancelled = jobs[0]
                    subprocess.run(["scancel", cancelled], env=slurm_cluster.env(), timeout=30, check=True)
                    break
            try:
                chain.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
        assert cancelled, f"no running training job to cancel:\n{slurm_log.read_text()[-6000:]}"
        chain_status = chain.wait(timeout=CHAIN_RUN_TIMEOUT_S + 30)
        local_status = local.wait(timeout=CHAIN_RUN_TIMEOUT_S + 30)
    finally:
        for process in (chain, local):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    output = slurm_log.read_text()
    run = subprocess.CompletedProcess([], chain_status, output, "")
    assert chain_status == 0, _failure_report(run, slurm_dir, slurm_cluster)
    assert local_status == 0, f"local run failed (exit {local_status}):\n{local_log.read_text()[-6000:]}"

    # --- sacct shows the chain: the cancelled job, jobs stopped by the warning or the time limit, the last one
    jobs = _training_jobs(slurm_cluster, output)
    states = [job["State"] for job in jobs]
    assert jobs[0]["JobIDRaw"] == cancelled and states[0].startswith("CANCELLED"), jobs
    assert states[-1] == "COMPLETED", jobs
    assert len(jobs) >= 3 and all(state in {"FAILED", "TIMEOUT"} for state in states[1:-1]), (iterations, jobs)
    for job in jobs[:-1]:
        # The training itself saved and said "resume me" (it got the signal, it was not killed first).
        [log] = (slurm_dir / ".snakemake" / "slurm_logs" / "rule_train_modality").rglob(f"{job['JobIDRaw']}.log")
        # Or, a race at the limit, the training had just finished when the job was stopped; the next
        # job then resumes at the last iteration, trains no step and predicts.
        text = log.read_text(errors="replace")
        assert ("returned non-zero exit status 75" in text
                or "Finished jobid: 0 (Rule: train_modality)" in text), (job, text[-3000:])

    # --- one history row per logged iteration, none missing, none repeated
    assert _history_iterations(slurm_dir / RUN_DIR) == list(range(10, iterations + 1, 10))

    # --- bit for bit the weights of the uninterrupted local run
    a = torch.load(slurm_dir / MODEL, weights_only=True)["state_dict"]
    b = torch.load(local_dir / MODEL, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)

    # --- the MLflow run went on across the jobs: one run of this training under the study's parent, finished
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{slurm_dir / 'results' / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name("modality"))
    runs = [run for run in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in run.data.tags]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [(r.info.run_id, r.info.status) for r in runs]


@pytest.mark.slow
def test_a_real_error_in_a_chained_training_is_trained_once(slurm_cluster, tmp_path):
    """A corrupted cache: the training fails; the profile's resubmissions stop at once with its error."""
    env = snakemake_env(slurm_cluster.env())
    workdir = tmp_path / "slurm"
    prepare_chain_data(workdir, env)
    for cached in (workdir / "results" / "data" / "preprocessed").glob("*.npy"):
        cached.write_bytes(b"not a numpy file")

    resubmissions = 2
    run = subprocess.run(_chain_command(workdir, slurm_cluster, [CHAIN], ["--preemptible-retries", str(resubmissions)],
                                        SLURM_RUN_TIMEOUT_S),
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=SLURM_RUN_TIMEOUT_S + 30)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    jobs = _training_jobs(slurm_cluster, output)
    assert len(jobs) == 1 + resubmissions and all(job["State"] == "FAILED" for job in jobs), jobs

    record = (workdir / RUN_DIR / "failed.txt").read_text()
    assert "cache array is corrupt" in record and ".npy" in record, record
    # The last job did not train: it repeated the first job's error, which its log shows.
    train_log = (workdir / "results" / "logs" / "modality" / "unet" / "t1c" / "seed0" / "train.log").read_text()
    assert "not training again" in train_log and record.strip() in train_log, train_log[-3000:]
    assert not (workdir / RUN_DIR / "history.tsv").exists()
