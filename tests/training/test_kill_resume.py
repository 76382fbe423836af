"""A real SIGKILL of a `brainmets train` process, then the same command again: it resumes and matches."""

import os
import re
import signal
import subprocess
import sys
import threading

import torch
import yaml

from brainmets.config import load_config
from brainmets.training.loop import RunRequest, train

ITERATIONS = 16
TIMEOUT_S = 180  # bound on each subprocess (a healthy run takes a few seconds)


def test_sigkill_then_rerun_resumes_and_matches_uninterrupted(tiny_data, tiny_config, tmp_path):
    cache, splits = tiny_data
    tiny_config["training"].update({"checkpoint_every": 2, "val_every": 0})
    tiny_config["training"]["segmentation"]["iterations"] = ITERATIONS
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "brainmets", "train", "--config", str(config_path), "--study", "modality",
               "--model", "unet", "--subset", "t1c+t2f", "--seed", "3", "--cache", str(cache),
               "--splits", str(splits), "--out-dir", str(out), "--no-progress"]

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(TIMEOUT_S, proc.kill)
    watchdog.start()
    try:
        for line in proc.stderr:  # the loop logs each checkpoint; kill right after the third one
            if re.search(r"checkpoint written at iteration 6\b", line):
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists(), "the run finished before it was killed: nothing was tested"
    killed_at = torch.load(out / "checkpoint.pt", weights_only=True)["iteration"]
    assert 6 <= killed_at < ITERATIONS

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr
    resumed_at = int(re.search(r"resumed at iteration (\d+)", rerun.stdout).group(1))
    assert resumed_at >= killed_at

    reference = tmp_path / "whole"
    train(load_config(config_path), RunRequest("modality", "unet", "t1c+t2f", 3, cache, splits, reference),
          progress=False)
    a = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(reference / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
