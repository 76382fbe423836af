"""Several seeds in one `brainmets train` (and `brainmets predict`) process, as the workflow runs them with
seeds_per_job: all: each run exactly as its own one-seed command, stopped and resumed run by run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import torch
import yaml

from brainmets.stopping import EXIT_RESUME

from .conftest import TINY_CONFIG, signal_at_checkpoint
from .test_train_predict import _ground_truth, _labels, _metric_bytes, _table, _weights

TIMEOUT_S = 600  # bound on each subprocess (a healthy one takes seconds)


def _run(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread, as Snakemake gives a one-thread job
    return subprocess.run([sys.executable, "-m", "brainmets", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=TIMEOUT_S)


def _ok(*args) -> subprocess.CompletedProcess:
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _config(tmp_path, **training) -> str:
    config = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], **training},
              "inference": {"overlap": 0.25, "batch_size": 4}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train_args(config, tiny_data, seeds, out_dirs):
    cache, splits = tiny_data
    return ["train", "--config", config, "--study", "modality", "--model", "unet", "--subset", "t1c+t2f",
            "--seed", *seeds, "--cache", cache, "--splits", splits, "--out-dir", *out_dirs, "--threads", "1",
            "--no-progress"]


def _history(run) -> pd.DataFrame:
    return pd.read_csv(run / "history.tsv", sep="\t").drop(columns="seconds")  # seconds: wall time


def _assert_same_run(run, reference):
    for weights in ("model.pt", "best.pt"):
        a, b = _weights(run / weights), _weights(reference / weights)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{run.name}/{weights}"
    pd.testing.assert_frame_equal(_history(run), _history(reference))


def test_two_seeds_in_one_process_are_the_two_one_seed_runs(tmp_path, tiny_data):
    cache, splits = tiny_data
    gt = _ground_truth(cache, tmp_path / "gt")
    config = _config(tmp_path)
    predict = ["--predict", "val", "--predict-weights", "best.pt", "--evaluate-gt", gt]
    together = [tmp_path / "together" / f"seed{seed}" for seed in (0, 1)]
    alone = [tmp_path / "alone" / f"seed{seed}" for seed in (0, 1)]
    out = _ok(*_train_args(config, tiny_data, [0, 1], together), *predict).stdout
    # each run trained, then predicted and evaluated, before the next one starts
    assert re.search(r"seed 0: 6 iterations.*val: 2 cases.*evaluated 2 case\(s\).*seed 1: 6 iterations"
                     r".*val: 2 cases.*evaluated 2 case\(s\)", out, re.S), out
    for seed, run in zip((0, 1), alone):
        _ok(*_train_args(config, tiny_data, [seed], [run]), *predict)

    for run, reference in zip(together, alone):
        _assert_same_run(run, reference)
        assert _metric_bytes(run, "val") == _metric_bytes(reference, "val")
        for name, expected in _labels(reference, "val").items():
            np.testing.assert_array_equal(_labels(run, "val")[name], expected, err_msg=name)
    # the seeds differ: a run did not overwrite or reuse the other's weights
    first, second = (_weights(run / "model.pt") for run in together)
    assert any(not torch.equal(first[k], second[k]) for k in first)

    # `brainmets predict` with one --model and --out-dir per run writes what the training job predicted
    predicted = [tmp_path / "predicted" / run.name for run in together]
    _ok("predict", "--config", config, "--model", *(run / "best.pt" for run in together), "--cache", cache,
        "--splits", splits, "--split", "val", "--out-dir", *predicted, "--evaluate-gt", gt, "--no-progress")
    for run, again in zip(together, predicted):
        pd.testing.assert_frame_equal(_table(again, "val"), _table(run, "val"))
        assert _metric_bytes(again, "val") == _metric_bytes(run, "val")


def test_two_subsets_in_one_process_are_their_own_runs(tmp_path, tiny_data):
    """--subset A B --seed 0 0 (modality_study.subsets_per_job): each run as its one-subset command."""
    cache, splits = tiny_data
    gt = _ground_truth(cache, tmp_path / "gt")
    config = _config(tmp_path)
    predict = ["--predict", "val", "--predict-weights", "best.pt", "--evaluate-gt", gt]
    subsets = ("t1c+t2f", "t1c")
    together = [tmp_path / "together" / subset / "seed0" for subset in subsets]
    args = _train_args(config, tiny_data, [0, 0], together)
    at = args.index("--subset") + 1
    out = _ok(*args[:at], *subsets, *args[at + 1:], *predict).stdout
    assert re.search(r"unet on t1c\+t2f, seed 0: 6 iterations.*evaluated 2 case\(s\).*unet on t1c, seed 0: "
                     r"6 iterations.*evaluated 2 case\(s\)", out, re.S), out
    for subset, run in zip(subsets, together):
        alone = tmp_path / "alone" / subset / "seed0"
        one = _train_args(config, tiny_data, [0], [alone])
        one[one.index("--subset") + 1] = subset
        _ok(*one, *predict)
        _assert_same_run(run, alone)
        assert _metric_bytes(run, "val") == _metric_bytes(alone, "val")
    # the networks see their own channels: two inputs against one
    first, second = (_weights(run / "model.pt") for run in together)
    assert any(first[k].shape != second[k].shape for k in first)
    # each (subset, seed) once; one subset per run or one for all
    repeated = _run(*args[:at], "t1c", "t1c", *args[at + 1:])
    assert repeated.returncode == 2 and "t1c seed 0 given twice" in repeated.stderr
    three = _run(*args[:at], "t1c", "t2f", "t2w", *args[at + 1:])
    assert three.returncode == 2 and "3 --subset, 2 --seed, 2 --out-dir" in three.stderr, three.stderr


def test_a_stop_ends_the_run_in_progress_starts_no_later_seed_and_the_same_command_resumes(tmp_path, tiny_data):
    iterations = 16
    config = _config(tmp_path, checkpoint_every=2, val_every=0, segmentation={"iterations": iterations})
    runs = [tmp_path / "group" / f"seed{seed}" for seed in (0, 1, 2)]
    command = [*_train_args(config, tiny_data, [0, 1, 2], runs), "--predict", "val"]
    proc, stderr = signal_at_checkpoint([sys.executable, "-m", "brainmets", *map(str, command)], 4,
                                         signal.SIGTERM, nth=2, timeout_s=TIMEOUT_S)
    stdout = proc.stdout.read()
    assert proc.returncode == EXIT_RESUME, stdout + stderr
    assert "Traceback" not in stderr
    assert (runs[0] / "model.pt").is_file() and (runs[0] / "predictions" / "val").is_dir()
    assert not (runs[1] / "model.pt").exists(), "seed 1 finished before the signal: nothing was tested"
    stopped_at = torch.load(runs[1] / "checkpoint.pt", weights_only=True)["iteration"]
    assert 4 <= stopped_at < iterations
    assert not runs[2].exists() and "not started: seed 2" in stdout

    # Snakemake removes the outputs of the failed job, the finished seed's included
    finished = _weights(runs[0] / "model.pt")
    for run in runs[:2]:
        for output in ("model.pt", "best.pt", "predictions"):
            path = run / output
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    again = _ok(*command).stdout
    resumed = [int(n) for n in re.findall(r"resumed at iteration (\d+)", again)]
    assert resumed == [iterations, stopped_at], again  # seed 0 trains no step, seed 1 goes on, seed 2 is new
    assert all(torch.equal(finished[k], v) for k, v in _weights(runs[0] / "model.pt").items())
    for run in runs:
        assert (run / "predictions" / "val").is_dir(), run
        assert _history(run)["iteration"].tolist() == list(range(1, iterations + 1)), run

    # seed 1, stopped and resumed, and seed 2 are the runs of their own uninterrupted commands
    for seed, run in ((1, runs[1]), (2, runs[2])):
        reference = tmp_path / "alone" / f"seed{seed}"
        _ok(*_train_args(config, tiny_data, [seed], [reference]))
        _assert_same_run(run, reference)


def test_lists_of_unequal_length_or_a_repeated_run_fail_before_any_work(tmp_path, tiny_data):
    config = _config(tmp_path)
    runs = [tmp_path / "seed0", tmp_path / "seed1"]
    short = _run(*_train_args(config, tiny_data, [0, 1], runs[:1]))
    assert short.returncode == 2
    assert "2 --seed, 1 --out-dir: expected one of each per --seed, in the same order" in short.stderr
    twice = _run(*_train_args(config, tiny_data, [0, 0], runs))
    assert twice.returncode == 2 and "--seed 0 0: each value once" in twice.stderr
    detectors = _run(*_train_args(config, tiny_data, [0, 1], runs), "--detector", tmp_path / "detector.pt")
    assert detectors.returncode == 2 and "2 --seed, 2 --out-dir, 1 --detector" in detectors.stderr
    cache, splits = tiny_data
    predict = _run("predict", "--model", tmp_path / "a.pt", tmp_path / "b.pt", "--cache", cache, "--splits", splits,
                   "--split", "val", "--out-dir", tmp_path / "a")
    assert predict.returncode == 2 and "2 --model, 1 --out-dir" in predict.stderr
    assert not any(run.exists() for run in runs)


def test_a_later_attempt_stops_on_any_run_recorded_as_failed_before_training(tmp_path, tiny_data):
    config = _config(tmp_path)
    runs = [tmp_path / "seed0", tmp_path / "seed1"]
    runs[1].mkdir()
    (runs[1] / "failed.txt").write_text("cache array is corrupt\n")
    second = _run(*_train_args(config, tiny_data, [0, 1], runs), "--attempt", "2")
    assert second.returncode == 2 and "not training again" in second.stderr
    assert str(runs[1] / "failed.txt") in second.stderr and "cache array is corrupt" in second.stderr
    assert not runs[0].exists()  # seed 0, before the failed run, did not train either
