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
PREDICTION_RULES = {"predict", "predict_twostage"}
CPU_RULES = {"synthesise", "index", "preprocess", "preprocess_case", "evaluate"}


# --------------------------------------------------------------------------- the profile itself


def _workflow_rules() -> set[str]:
    names = set()
    for smk in [SNAKEFILE, *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        names |= set(re.findall(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", smk.read_text(), re.M))
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


def site_overrides(partition: str, account: str) -> list[str]:
    """The profile's resources with this cluster's partition and account and no GPU, as flags.

    On the command line --default-resources and --set-resources replace the profile's whole
    setting, so the profile's values are carried over and only the site settings swapped; a
    rule added to the profile is covered without touching this test.
    """
    defaults = {**PROFILE["default-resources"], "slurm_partition": partition, "slurm_account": account}
    per_rule = []
    for rule, resources in PROFILE["set-resources"].items():
        resources = {key: value for key, value in resources.items() if key not in {"gres", "gpu_model", "constraint"}}
        resources["slurm_partition"] = partition
        if "gpu" in resources:
            resources["gpu"] = 0
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
    assert sum(remote_jobs.values()) == 12, remote_jobs

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
