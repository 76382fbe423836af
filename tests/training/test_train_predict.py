"""`brainmets train --predict --evaluate-gt`: the training job predicts and evaluates, in its own process,
what `brainmets predict` and `brainmets evaluate` would.

The workflow's single-pass runs rely on it (workflow/rules/modality_study.smk): the
predictions, inference tables and metric files must be those of separate prediction and
evaluation jobs (the metric files byte for byte), and a job re-run for a changed inference
setting (Snakemake removed its outputs) must train no step and give the same weights and metrics.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import yaml

from .conftest import TINY_CONFIG


def _run(*args) -> subprocess.CompletedProcess:
    # one thread, as Snakemake gives a one-thread job (OMP_NUM_THREADS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "brainmets", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def _brainmets(*args) -> subprocess.CompletedProcess:
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _labels(run, split) -> dict[str, np.ndarray]:
    return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted((run / "predictions" / split).glob("*.nii.gz"))}


def _table(run, split) -> pd.DataFrame:
    # seconds, seconds_total: wall times, the columns allowed to differ
    table = pd.read_csv(run / "inference" / f"{split}.tsv", sep="\t")
    return table.drop(columns=[c for c in table.columns if c.startswith("seconds")])


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _metric_bytes(run, split) -> dict[str, bytes]:
    return {name: (run / "metrics" / name).read_bytes() for name in (f"{split}.tsv", f"{split}_lesions.tsv")}


def _ground_truth(cache, root):
    """The cached labels as flat ground truth (<case>-seg.nii.gz): the cache is on the original grid
    (identity affine, no resampling), so the predictions written back are on the same grid."""
    root.mkdir()
    for array_file in sorted(cache.glob("*.npy")):
        label = np.load(array_file)[-1].astype(np.uint8)
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / f"{array_file.stem}-seg.nii.gz")
    return root


def test_training_job_predicts_and_evaluates_as_separate_jobs_and_reruns_without_training(tmp_path, tiny_data):
    cache, splits = tiny_data
    gt = _ground_truth(cache, tmp_path / "gt")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG | {"inference": {"overlap": 0.25, "batch_size": 4}}))
    run = tmp_path / "run"
    train = ["train", "--config", config, "--study", "modality", "--model", "unet", "--subset", "t1c+t2f",
             "--seed", "0", "--cache", cache, "--splits", splits, "--out-dir", run, "--threads", "1",
             "--no-progress", "--predict", "val", "--predict-weights", "best.pt", "--evaluate-gt", gt]
    trained = _brainmets(*train)
    assert "val: 2 cases" in trained.stdout
    assert f"evaluated 2 case(s) -> {run / 'metrics' / 'val.tsv'}" in trained.stdout

    alone = tmp_path / "predicted"
    _brainmets("predict", "--config", config, "--model", run / "best.pt", "--cache", cache, "--splits", splits,
               "--split", "val", "--out-dir", alone, "--no-progress")
    labels = _labels(run, "val")
    assert len(labels) == 2 and labels.keys() == _labels(alone, "val").keys()
    for name, expected in _labels(alone, "val").items():
        np.testing.assert_array_equal(labels[name], expected, err_msg=name)
    pd.testing.assert_frame_equal(_table(run, "val"), _table(alone, "val"))
    assert (_table(run, "val")["checkpoint"] == "best.pt").all()

    # the metric files are those of a separate `brainmets evaluate` (as the workflow ran it), byte for byte
    _brainmets("evaluate", "--pred-dir", run / "predictions" / "val", "--gt-dir", gt,
               "--out", alone / "metrics" / "val.tsv", "--lesions-out", alone / "metrics" / "val_lesions.tsv",
               "--cases-from", splits, "--split", "val")
    metrics = _metric_bytes(run, "val")
    assert metrics == _metric_bytes(alone, "val")
    assert pd.read_csv(run / "metrics" / "val.tsv", sep="\t")["case"].nunique() == 2
    assert not list(run.rglob(".*.part*"))  # atomic writes leave no temporary files

    # a re-run as Snakemake starts it (the job's outputs removed): no step, the same weights, labels, metrics
    history = (run / "history.tsv").read_text()
    weights = _weights(run / "model.pt")
    for output in ("model.pt", "best.pt"):
        (run / output).unlink()
    for folder in ("predictions", "inference", "metrics"):
        shutil.rmtree(run / folder)
    again = _brainmets(*train)
    assert "resumed at iteration 6" in again.stdout, again.stdout
    assert (run / "history.tsv").read_text() == history
    assert all(torch.equal(weights[k], v) for k, v in _weights(run / "model.pt").items())
    for name, expected in labels.items():
        np.testing.assert_array_equal(_labels(run, "val")[name], expected, err_msg=name)
    assert _metric_bytes(run, "val") == metrics


def test_a_bad_evaluation_request_fails_before_training(tmp_path, tiny_data):
    cache, splits = tiny_data
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    run = tmp_path / "run"
    train = ["train", "--config", config, "--study", "modality", "--model", "unet", "--subset", "t1c",
             "--seed", "0", "--cache", cache, "--splits", splits, "--out-dir", run, "--no-progress"]
    for extra, message in ((["--predict", "val", "--evaluate-gt", tmp_path / "nowhere"],
                            f"ground-truth directory not found: {tmp_path / 'nowhere'}"),
                           (["--evaluate-gt", cache], "--evaluate-gt needs --predict")):
        proc = _run(*train, *extra)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not run.exists()  # nothing trained, nothing written
