"""A real `brainmets train` process ended mid-run (SIGKILL, or SIGTERM as at a time limit), then the same
command again: it resumes and ends with the weights of an uninterrupted run."""

import re
import shutil
import signal
import subprocess
import sys

import pandas as pd
import torch
import yaml

from brainmets.config import load_config
from brainmets.stopping import EXIT_RESUME
from brainmets.training.loop import RunRequest, train

from .conftest import signal_at_checkpoint

ITERATIONS = 16
TIMEOUT_S = 180  # bound on each subprocess (a healthy run takes a few seconds)


def _command(tiny_data, tiny_config, tmp_path, out):
    """`python -m brainmets train` on the tiny data: 16 steps, a checkpoint every 2, no validation."""
    cache, splits = tiny_data
    tiny_config["training"].update({"checkpoint_every": 2, "val_every": 0})
    tiny_config["training"]["segmentation"]["iterations"] = ITERATIONS
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config))
    command = [sys.executable, "-m", "brainmets", "train", "--config", str(config_path), "--study", "modality",
               "--model", "unet", "--subset", "t1c+t2f", "--seed", "3", "--cache", str(cache),
               "--splits", str(splits), "--out-dir", str(out), "--no-progress"]
    return command, config_path


def _assert_matches_uninterrupted(tmp_path, config_path, tiny_data, out):
    cache, splits = tiny_data
    reference = tmp_path / "whole"
    train(load_config(config_path), RunRequest("modality", "unet", "t1c+t2f", 3, cache, splits, reference),
          progress=False)
    a = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(reference / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert history["iteration"].tolist() == list(range(1, ITERATIONS + 1))  # no gap, no repeat


def test_sigkill_then_rerun_resumes_and_matches_uninterrupted(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "killed"
    command, config_path = _command(tiny_data, tiny_config, tmp_path, out)
    proc, _ = signal_at_checkpoint(command, 6, signal.SIGKILL, timeout_s=TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists(), "the run finished before it was killed: nothing was tested"
    killed_at = torch.load(out / "checkpoint.pt", weights_only=True)["iteration"]
    assert 6 <= killed_at < ITERATIONS

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr
    resumed_at = int(re.search(r"resumed at iteration (\d+)", rerun.stdout).group(1))
    assert resumed_at >= killed_at
    _assert_matches_uninterrupted(tmp_path, config_path, tiny_data, out)


def test_sigterm_checkpoints_the_current_step_exits_75_and_a_rerun_matches(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "terminated"
    command, config_path = _command(tiny_data, tiny_config, tmp_path, out)
    proc, stderr = signal_at_checkpoint(command, 4, signal.SIGTERM, timeout_s=TIMEOUT_S)
    assert proc.returncode == EXIT_RESUME, stderr
    assert not (out / "model.pt").exists(), "the run finished before the signal: nothing was tested"
    stopped_at = int(re.search(r"SIGTERM received: stopped at iteration (\d+) of 16", stderr).group(1))
    # the signal came after step 4's checkpoint: the job finished the step it was in and saved there
    assert 4 <= stopped_at < ITERATIONS
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == stopped_at
    assert re.search(rf"checkpoint written at iteration {stopped_at}\b", stderr)
    assert pd.read_csv(out / "history.tsv", sep="\t")["iteration"].tolist() == list(range(1, stopped_at + 1))
    assert "Traceback" not in stderr
    assert "not finished; run the same command again to resume" in proc.stdout.read()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr
    assert int(re.search(r"resumed at iteration (\d+)", rerun.stdout).group(1)) == stopped_at
    _assert_matches_uninterrupted(tmp_path, config_path, tiny_data, out)


def test_a_real_error_is_trained_once_per_chain_of_attempts(tiny_data, tiny_config, tmp_path):
    """--attempt: the error of attempt 1 is recorded; attempt 2 repeats it without training; a new attempt 1 trains."""
    cache, splits = tiny_data
    own_cache = tmp_path / "cache"  # a copy: the session's tiny data stay intact
    shutil.copytree(cache, own_cache)
    out = tmp_path / "run"
    command, _ = _command((own_cache, splits), tiny_config, tmp_path, out)
    arrays = {path: path.read_bytes() for path in own_cache.glob("*.npy")}
    for path in arrays:
        path.write_bytes(b"not a numpy file")

    def run(attempt):
        return subprocess.run([*command, "--attempt", str(attempt)], capture_output=True, text=True, timeout=TIMEOUT_S)

    first = run(1)
    assert first.returncode == 2, first.stderr[-3000:]
    record = (out / "failed.txt").read_text()
    assert "cache array is corrupt" in record and record.strip() in first.stderr

    for path, data in arrays.items():  # fixed, but the chain must not train again: attempt 2 repeats the error
        path.write_bytes(data)
    second = run(2)
    assert second.returncode == 2 and "not training again" in second.stderr and record.strip() in second.stderr
    assert not (out / "history.tsv").exists()

    fresh = run(1)  # a new Snakemake run after the fix
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert not (out / "failed.txt").exists() and (out / "model.pt").is_file()
