"""Killed jobs, resumption and determinism, with real processes and real SIGKILLs.

* Inside a real Snakemake run, the training process is SIGKILLed once its first
  checkpoint exists; `snakemake --rerun-incomplete` resumes it from that
  checkpoint (not from zero) and it ends with bitwise the weights of an
  uninterrupted run. The rerun's training job, predicting once trained, is
  SIGKILLed while it writes a prediction; the next rerun resumes from the final
  checkpoint (no step), predicts and evaluates in the same job, and the metrics
  equal the uninterrupted run's byte for byte (same config and seed -> same
  metrics, on CPU); another seed gives other metrics.
* `brainmets predict` / `brainmets evaluate` killed in the middle of a file or
  just before its rename (kill_at.py): a finished-looking file is always
  complete, the earlier result is kept, and the rerun completes.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from reliability_helpers import (  # registered by conftest.py
    TIMEOUT_S,
    assert_user_error,
    brainmets_pids,
    clean_env,
    digests,
    run_cli,
    run_snakemake,
    snakemake_command,
    wait_for,
    workflow_config,
)

KILL_AT = Path(__file__).with_name("kill_at.py")
RUN = "results/modality/unet/t1c/seed{seed}"
#: The log of the job training the modality study's U-Net on t1c: every seed's (seeds_per_job: all, the default).
TRAIN_LOG = "results/logs/modality/unet/t1c/seeds/train.log"
ITERATIONS = 40


def _targets(seed: int) -> list[str]:
    return [f"{RUN.format(seed=seed)}/metrics/{split}.tsv" for split in ("val", "test")]


def _start_snakemake(work: Path, log: Path, *args: str) -> subprocess.Popen:
    # output to a file, not a pipe: nobody reads a pipe while the test waits, and a full pipe blocks
    out = open(log, "w")
    proc = subprocess.Popen(snakemake_command(work, *args), env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                            text=True)
    out.close()
    return proc


def _sigkill_job(work: Path, verb: str, proc: subprocess.Popen) -> int:
    """SIGKILL the `brainmets VERB` process that Snakemake started in ``work`` (not its bash wrapper)."""
    pid = wait_for(lambda: brainmets_pids(verb, work), 60, f"the {verb} job's process", proc)[0]
    os.kill(pid, signal.SIGKILL)
    return pid


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _complete_nifti(path: Path) -> bool:
    """The whole gzip stream decodes (CRC and length) and nibabel reads every voxel."""
    gzip.decompress(path.read_bytes())
    return np.asarray(nib.load(path).dataobj).size > 0

#: Mostly tumour crops (the schema's 2:1, not the default study's 1:3): in so few steps the network
#: then learns some tumour, and runs that should differ (other seeds) do not all predict empty maps.
SEGMENTATION = {"iterations": ITERATIONS, "batch_patients": 2, "crops_per_patient": 1, "pos_fraction": 2 / 3}


@pytest.mark.slow
def test_killed_jobs_in_snakemake_resume_and_runs_are_deterministic(cohort, tmp_path):
    config = workflow_config(tmp_path / "config.yaml", cohort,
                             training={"segmentation": SEGMENTATION,
                                       "checkpoint_every": 2, "val_every": 0, "log_every": 1, "threads": 1})
    work = tmp_path / "killed"
    run_dir = work / RUN.format(seed=0)
    args = ["--configfile", str(config), "--cores", "1", *_targets(0)]

    # the uninterrupted reference (seed 0) and seed 1, in another directory, alongside the killed run
    reference = tmp_path / "reference"
    config01 = workflow_config(tmp_path / "config01.yaml", cohort, seeds=[0, 1],
                               training={"segmentation": SEGMENTATION,
                                         "checkpoint_every": 2, "val_every": 0, "log_every": 1, "threads": 1})
    ref_log = tmp_path / "snakemake_reference.log"
    ref = _start_snakemake(reference, ref_log, "--configfile", str(config01), "--cores", "1",
                           *_targets(0), *_targets(1))
    try:
        _killed_and_resumed(work, run_dir, args, tmp_path)
        ref.wait(timeout=2 * TIMEOUT_S)
    finally:
        ref.kill()
    assert ref.returncode == 0, ref_log.read_text()

    # same config and seed: the killed-and-resumed run equals the uninterrupted one, bit for bit
    ref0, ref1 = reference / RUN.format(seed=0), reference / RUN.format(seed=1)
    assert _same_weights(run_dir / "model.pt", ref0 / "model.pt"), "resumed weights differ from an uninterrupted run"
    assert digests(run_dir / "metrics") == digests(ref0 / "metrics"), "same config and seed, different metrics"
    # another seed: other weights, other metrics
    assert not _same_weights(ref0 / "model.pt", ref1 / "model.pt")
    assert digests(ref0 / "metrics") != digests(ref1 / "metrics"), "seeds 0 and 1 gave the same metrics"


def _killed_and_resumed(work: Path, run_dir: Path, args: list[str], tmp_path: Path) -> None:
    """Train killed, rerun (resumes; killed while it predicts), rerun (completes), checking each step."""
    # 1. SIGKILL the training process once a checkpoint exists
    log1 = tmp_path / "snakemake_1.log"
    proc = _start_snakemake(work, log1, *args)
    try:
        wait_for(lambda: (run_dir / "checkpoint.pt").is_file(), TIMEOUT_S, "the first checkpoint", proc)
        _sigkill_job(work, "train", proc)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    out = log1.read_text()
    assert proc.returncode != 0, out
    assert "Error in rule train_modality" in out, out
    assert not (run_dir / "model.pt").exists(), "training finished before the kill: nothing was tested"
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"]
    assert 2 <= killed_at < ITERATIONS

    # 2. rerun: training resumes at the checkpoint, finishes and predicts; SIGKILL it while it writes
    log2 = tmp_path / "snakemake_2.log"
    proc = _start_snakemake(work, log2, *args, "--rerun-incomplete")
    predictions = run_dir / "predictions"
    try:
        wait_for(lambda: predictions.is_dir() and any(predictions.rglob("*.nii.gz")), TIMEOUT_S,
                 "the first prediction file", proc)
        _sigkill_job(work, "train", proc)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    out = log2.read_text()
    assert proc.returncode != 0, "the training job finished predicting before the kill: nothing was tested\n" + out
    assert "Error in rule train_modality" in out, out
    assert "Removing output files of failed job train_modality" in out, out
    train_log = (work / TRAIN_LOG).read_text()
    resumed = re.search(r"resuming \S+ from iteration (\d+) of (\d+)", train_log)
    assert resumed, train_log
    assert int(resumed.group(1)) == killed_at > 0 and int(resumed.group(2)) == ITERATIONS
    history = pd.read_csv(run_dir / "history.tsv", sep="\t")
    assert history["iteration"].tolist() == list(range(1, ITERATIONS + 1)), "history lost or repeated steps"
    # Snakemake deleted the killed job's outputs it knew of; a write the kill interrupted is at most a
    # hidden temporary file (.<name>.<random>.part.<ext>), never a finished-looking one
    assert not predictions.exists()
    inference = run_dir / "inference"
    assert not list(inference.glob("[!.]*")), "an output of the killed job survived under its final name"
    assert all(".part" in p.name for p in inference.glob(".*"))

    # 3. rerun again: training resumes at its final checkpoint (no step), predicts, evaluates; everything completes
    run3 = run_snakemake(work, *args, "--rerun-incomplete")
    assert run3.returncode == 0, run3.stdout
    train_log = (work / TRAIN_LOG).read_text()
    assert re.search(rf"resuming \S+ from iteration {ITERATIONS} of {ITERATIONS}", train_log), train_log
    assert pd.read_csv(run_dir / "history.tsv", sep="\t")["iteration"].tolist() == list(range(1, ITERATIONS + 1))
    splits = pd.read_csv(work / "results/data/splits.tsv", sep="\t")
    for split in ("val", "test"):
        cases = sorted(splits.loc[splits["split"] == split, "case"])
        finished = sorted(p.name.removesuffix(".nii.gz") for p in (predictions / split).glob("[!.]*.nii.gz"))
        assert finished == cases
        assert all(_complete_nifti(predictions / split / f"{c}.nii.gz") for c in cases)
        assert sorted(pd.read_csv(run_dir / "metrics" / f"{split}.tsv", sep="\t")["case"].unique()) == cases
        assert sorted(pd.read_csv(inference / f"{split}.tsv", sep="\t")["case"]) == cases


# --------------------------------------------------------------------------- kills at an exact moment


def _kill_at(mode: str, pattern: str, nth: int, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KILL_AT), mode, pattern, str(nth), "--", *map(str, args)],
                          env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


def test_predict_killed_in_the_middle_of_a_file(trained, tmp_path):
    out = tmp_path / "run"
    args = ["predict", "--config", trained.config, "--model", trained.run / "model.pt", "--cache", trained.cache,
            "--splits", trained.splits, "--split", "val", "test", "--out-dir", out, "--no-progress"]
    test = sorted(pd.read_csv(trained.splits, sep="\t").query("split == 'test'")["case"])
    assert len(test) >= 2

    # val (1 case) is written, then the first test case; the kill lands inside the second test case
    killed = _kill_at("gzip-write", "predictions", 3, *args)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folder = out / "predictions" / "test"
    finished = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert finished == [f"{test[0]}.nii.gz"], finished  # the first case, complete; the second only as a temp file
    assert _complete_nifti(folder / finished[0])
    temporary = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert len(temporary) == 1 and temporary[0].startswith(f".{test[1]}.nii.gz.") and ".part" in temporary[0]
    assert (out / "inference" / "val.tsv").is_file()  # the finished split
    assert not (out / "inference" / "test.tsv").exists(), "the inference table was written for an unfinished split"
    # the evaluator never takes the temporary file for the prediction
    proc = run_cli("evaluate", "--pred-dir", folder, "--gt-dir", _cohort_of(trained), "--cases-from", trained.splits,
                   "--split", "test", "--out", tmp_path / "metrics.tsv")
    assert_user_error(proc, "evaluate", test[1], "prediction missing")

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    for split in ("val", "test"):
        cases = sorted(pd.read_csv(trained.splits, sep="\t").query("split == @split")["case"])
        table = pd.read_csv(out / "inference" / f"{split}.tsv", sep="\t")
        assert sorted(table["case"]) == cases
        assert all(_complete_nifti(out / "predictions" / split / f"{c}.nii.gz") for c in cases)


def _cohort_of(trained) -> Path:
    return Path(pd.read_csv(trained.cases, sep="\t")["root"].iloc[0])


def test_evaluate_killed_before_its_rename_keeps_the_earlier_metrics(trained, tmp_path):
    cohort = _cohort_of(trained)
    cases = sorted(pd.read_csv(trained.splits, sep="\t").query("split == 'test'")["case"])
    pred = tmp_path / "predictions"
    pred.mkdir()
    for case in cases:  # perfect predictions
        (pred / f"{case}.nii.gz").write_bytes((cohort / case / f"{case}-seg.nii.gz").read_bytes())
    metrics = tmp_path / "metrics"
    args = ["evaluate", "--pred-dir", pred, "--gt-dir", cohort, "--out", metrics / "test.tsv",
            "--lesions-out", metrics / "test_lesions.tsv", "--cases-from", trained.splits, "--split", "test"]
    assert run_cli(*args).returncode == 0
    before = digests(metrics)
    # a changed prediction: the rerun would write other metrics, if it got that far
    (pred / f"{cases[0]}.nii.gz").write_bytes(_empty_like(cohort / cases[0] / f"{cases[0]}-seg.nii.gz"))

    killed = _kill_at("rename", "test.tsv", 1, *args)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = {name: digest for name, digest in digests(metrics).items() if not name.startswith(".")}
    assert finished == before, "the earlier metrics were replaced or damaged by a killed run"
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    scores = pd.read_csv(metrics / "test.tsv", sep="\t")
    wt = scores.query("case == @cases[0] and region == 'WT'")["legacy_dice"]
    assert wt.tolist() == [0.0]  # the new, empty prediction was scored


def _empty_like(seg_path: Path) -> bytes:
    import io

    image = nib.load(seg_path)
    empty = nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine)
    buffer = io.BytesIO()
    file_map = empty.make_file_map({"image": buffer, "header": buffer})
    empty.to_file_map(file_map)
    return gzip.compress(buffer.getvalue())
