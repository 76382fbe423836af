"""`brainmets train --predict`: the training job predicts, in its own process, what `brainmets predict` would.

The workflow's single-pass runs rely on it (workflow/rules/modality_study.smk): the
predictions and inference tables must be those of a separate prediction job, and a
job re-run for a changed inference setting (Snakemake removed its outputs) must train
no step and give the same weights.
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


def _brainmets(*args) -> subprocess.CompletedProcess:
    # one thread, as Snakemake gives a one-thread job (OMP_NUM_THREADS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "brainmets", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
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


def test_training_job_predicts_as_a_prediction_job_and_reruns_without_training(tmp_path, tiny_data):
    cache, splits = tiny_data
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG | {"inference": {"overlap": 0.25, "batch_size": 4}}))
    run = tmp_path / "run"
    train = ["train", "--config", config, "--study", "modality", "--model", "unet", "--subset", "t1c+t2f",
             "--seed", "0", "--cache", cache, "--splits", splits, "--out-dir", run, "--threads", "1",
             "--no-progress", "--predict", "val", "--predict-weights", "best.pt"]
    trained = _brainmets(*train)
    assert "val: 2 cases" in trained.stdout

    alone = tmp_path / "predicted"
    _brainmets("predict", "--config", config, "--model", run / "best.pt", "--cache", cache, "--splits", splits,
               "--split", "val", "--out-dir", alone, "--no-progress")
    labels = _labels(run, "val")
    assert len(labels) == 2 and labels.keys() == _labels(alone, "val").keys()
    for name, expected in _labels(alone, "val").items():
        np.testing.assert_array_equal(labels[name], expected, err_msg=name)
    pd.testing.assert_frame_equal(_table(run, "val"), _table(alone, "val"))
    assert (_table(run, "val")["checkpoint"] == "best.pt").all()

    # a re-run as Snakemake starts it (the job's outputs removed): no step, the same weights and labels
    history = (run / "history.tsv").read_text()
    weights = _weights(run / "model.pt")
    for output in ("model.pt", "best.pt"):
        (run / output).unlink()
    shutil.rmtree(run / "predictions")
    shutil.rmtree(run / "inference")
    again = _brainmets(*train)
    assert "resumed at iteration 6" in again.stdout, again.stdout
    assert (run / "history.tsv").read_text() == history
    assert all(torch.equal(weights[k], v) for k, v in _weights(run / "model.pt").items())
    for name, expected in labels.items():
        np.testing.assert_array_equal(_labels(run, "val")[name], expected, err_msg=name)
