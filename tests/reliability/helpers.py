"""Helpers of the reliability tests: real CLI / Snakemake processes, configs, waits, file digests.

Test modules import it as ``reliability_helpers`` (registered by conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
BIN = Path(sys.executable).parent
BRAINMETS = BIN / "brainmets"
SNAKEMAKE = BIN / "snakemake"

#: The synthetic cohort of these tests: BraTS field of view at 4 mm (as tests/workflow/reduced.yaml).
COHORT_SHAPE = (60, 60, 39)
COHORT_SPACING = 4.0
N_CASES = 6
#: Bound on one subprocess; a healthy one takes seconds (torch + MONAI import dominate).
TIMEOUT_S = 240

#: The tiny network and training budget of every training run in this folder.
TINY_UNET = {"arch": "dynunet", "filters": [4, 8, 16], "residual": False, "deep_supervision": 0,
             "patch": [16, 16, 16]}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: no outside MLflow server, no telemetry, no colours."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", NO_COLOR="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """`brainmets ARGS` as a user types it (the console script of this interpreter)."""
    return subprocess.run([str(BRAINMETS), *map(str, args)], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [str(SNAKEMAKE), "-s", str(SNAKEFILE), "-d", str(workdir), *map(str, args)]


def run_snakemake(workdir: Path, *args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """`snakemake -s <repo>/Snakefile -d WORKDIR ARGS`; stdout and stderr together in ``.stdout``."""
    return subprocess.run(snakemake_command(workdir, *args), env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, verb: str, *needles: str) -> str:
    """A user error as the CLI contract says: exit 2, `brainmets VERB: error: ...`, no traceback.

    Returns stderr. Each needle (case id, file name, expectation, advice) must be in it.
    """
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}, expected 2\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert "Traceback" not in err, f"a user error printed a traceback:\n{err}"
    assert f"brainmets {verb}: error:" in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in the message:\n{err}"
    return err


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest): 'byte-identical' checks."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             alive: subprocess.Popen | None = None) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds.

    Used only to catch a moment in another process (a checkpoint appearing, a
    job starting) so that it can be killed there; nothing waits a fixed time.
    With ``alive``, fail as soon as that process has ended (the moment was missed).
    """
    def check() -> object:
        try:
            return condition()
        except OSError:  # a file vanished while being looked at (renamed, removed): not yet
            return None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            value = check()
            if value:
                return value
            out = alive.stdout.read() if alive.stdout else ""
            pytest.fail(f"process ended (exit {alive.returncode}) before {what}:\n{out}")
        time.sleep(0.01)  # polling interval of the wait, not a synchronisation delay
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def brainmets_pids(verb: str, cwd: Path) -> list[int]:
    """Processes running `brainmets VERB` in directory ``cwd`` (read from /proc; Linux).

    Matches the Python process of the console script (``python .../brainmets VERB ...``),
    not the ``bash -c "... brainmets VERB ..."`` wrapper of a Snakemake job nor Snakemake
    itself. ``cwd``: Snakemake runs its jobs in its working directory, so jobs of other
    test runs on the machine are never hit.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")]
            if os.readlink(entry / "cwd") != str(Path(cwd).resolve()):
                continue
        except OSError:  # the process ended meanwhile
            continue
        if any(Path(a).name == "brainmets" and argv[i + 1:i + 2] == [verb] for i, a in enumerate(argv)):
            found.append(int(entry.name))
    return found


def workflow_config(path: Path, cohort: Path, **sections) -> Path:
    """A tiny study on a real cohort root (``data.synthetic.enabled: false``), merged over config.yaml."""
    config = {
        "data": {"synthetic": {"enabled": False}, "root": str(cohort),
                 "split": {"fractions": [0.5, 0.25, 0.25]}},
        "seeds": [0],
        "models": {"unet": TINY_UNET},
        # pos_fraction: mostly tumour crops (the schema's 2:1), so that 40 steps learn some tumour and
        # runs that should differ (other seeds) do not all predict empty maps
        "training": {"segmentation": {"iterations": 40, "batch_patients": 2, "crops_per_patient": 1,
                                      "pos_fraction": 2 / 3},
                     "checkpoint_every": 2, "val_every": 0, "log_every": 1, "threads": 1},
        "modality_study": {"subsets": ["t1c"], "subsets_per_job": 1},  # the one-subset job (rule train_modality)
        "baselines": {"models": []},  # the default's reused 3D-UNET row would need the all-four subset
        "tracking": {"enabled": False},
        "ensembles": {"enabled": False},  # config.yaml's members are not trained here
        # the 40-step networks predict small specks only, which the default's WT minimum would erase
        "postprocessing": {"min_volume_mm3": {"WT": 0, "TC": 0, "ET": 0}},
        "resources": {"train": {"threads": 1}, "predict": {"threads": 1}, "data": {"threads": 1}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def full_config(path: Path, **changes) -> Path:
    """The embedded config.yaml with top-level ``changes`` (the file `brainmets train --config` reads)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["models"]["unet"] = dict(TINY_UNET)
    config["training"].update({"checkpoint_every": 2, "val_every": 0, "log_every": 1, "threads": 1})
    config["training"].setdefault("segmentation", {}).update(
        {"iterations": 6, "batch_patients": 2, "crops_per_patient": 1})
    config["tracking"] = {"enabled": False}
    config["ensembles"]["enabled"] = False
    for key, value in changes.items():
        config[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def clone_case(src_root: Path, case: str, dst_root: Path, new_case: str) -> Path:
    """Copy ``case`` to ``dst_root/new_case`` with its files renamed (a new, valid case)."""
    dst = dst_root / new_case
    dst.mkdir(parents=True)
    for path in (src_root / case).iterdir():
        shutil.copy2(path, dst / path.name.replace(case, new_case))
    return dst
