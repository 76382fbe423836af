"""A real `brainmets train` process ended mid-run (SIGKILL, or SIGTERM as at a time limit), then the same
command again: it resumes and ends with the weights of an uninterrupted run."""

import os
import re
import signal
import subprocess
import sys
import threading

import pandas as pd
import torch
import yaml

from brainmets.config import load_config
from brainmets.stopping import EXIT_RESUME
from brainmets.training.loop import RunRequest, train

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


def _signal_after_checkpoint(command, iteration, signum):
    """Run ``command``; send ``signum`` as soon as it logs its checkpoint at ``iteration``; return (proc, stderr)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(TIMEOUT_S, proc.kill)
    watchdog.start()
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if re.search(rf"checkpoint written at iteration {iteration}\b", line):
                os.kill(proc.pid, signum)
                break
        seen.append(proc.stderr.read())
        proc.wait()
    finally:
        watchdog.cancel()
    return proc, "".join(seen)


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
    proc, _ = _signal_after_checkpoint(command, 6, signal.SIGKILL)
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
    proc, stderr = _signal_after_checkpoint(command, 4, signal.SIGTERM)
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
