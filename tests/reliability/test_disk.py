"""A full disk and a read-only results directory, on real file systems.

The tests run as root here, and root ignores permission bits (chmod 0o500
would not stop it), so an unwritable directory is a real read-only mount: a
tmpfs remounted ``ro``. A full disk is a small tmpfs filled up to ENOSPC. Both
are mounted under the test's tmp_path and unmounted by the fixture's
finalizer. Where mounting is not allowed (no root / CAP_SYS_ADMIN, e.g. some CI
containers) the tests are skipped with that reason.

Each command must fail with a user error naming the path and the cause and
saying what to do; earlier results on that file system stay byte-identical, and
nothing under a final name is left half-written (no leftover temporary files
either: a failed atomic write removes its own).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from reliability_helpers import assert_user_error, digests, run_cli  # registered by conftest.py


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, size, read_only=False, prepare=None)``: a tmpfs mounted at tmp_path/name.

    ``prepare(path)`` runs before a read-only remount (to place earlier results there).
    """
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    mounted: list[Path] = []

    def mount(name: str, size: str, read_only: bool = False, prepare=None) -> Path:
        target = tmp_path / name
        target.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
        mounted.append(target)
        if prepare is not None:
            prepare(target)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True, capture_output=True)
        return target

    yield mount
    for target in reversed(mounted):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)  # busy: detach it anyway


def fill(path: Path, leave: int = 0) -> None:
    """Write a filler file until the file system is full (ENOSPC), then give ``leave`` bytes back."""
    filler = path / "filler.bin"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    if not leave:
        with pytest.raises(OSError):
            (path / "probe").write_bytes(b"x" * 4096)


def _no_temporary_files(root: Path) -> None:
    left = [p for p in root.rglob("*") if ".part" in p.name]
    assert not left, f"temporary files left behind: {left}"


# --------------------------------------------------------------------------- read-only


#: verb -> what its message must say besides the path and "Read-only file system".
READ_ONLY_ADVICE = {
    "synth": ("choose a writable --out-dir",),
    "index": ("not writable", "write the results elsewhere"),
    "preprocess": ("not writable", "write the results elsewhere"),
    "evaluate": ("not writable", "write the results elsewhere"),
    "train": ("not writable", "write the results elsewhere"),
}


@pytest.mark.parametrize("verb", list(READ_ONLY_ADVICE))
def test_read_only_results_directory(verb, trained, tmpfs):
    cohort = Path(pd.read_csv(trained.cases, sep="\t")["root"].iloc[0])

    def earlier(root: Path) -> None:  # results of an earlier run on that file system
        (root / "data").mkdir()
        shutil.copy2(trained.cases, root / "data" / "cases.tsv")

    results = tmpfs("results", "1m", read_only=True, prepare=earlier)
    before = digests(results)
    args = {
        "synth": ["--out-dir", results / "synthetic", "--n-cases", "1", "--shape", "16", "16", "16",
                  "--spacing", "12", "--no-progress"],
        "index": ["--root", cohort, "--out", results / "data" / "cases.tsv", "--no-progress"],
        "preprocess": ["--cases", trained.cases, "--out-dir", results / "data" / "preprocessed"],
        "evaluate": ["--pred-dir", cohort, "--gt-dir", cohort, "--out", results / "metrics" / "val.tsv"],
        "train": ["--config", trained.config, "--study", "modality", "--model", "unet", "--subset", "t1c",
                  "--seed", "0", "--cache", trained.cache, "--splits", trained.splits,
                  "--out-dir", results / "modality" / "unet" / "t1c" / "seed0", "--no-progress"],
    }[verb]
    if verb == "evaluate":  # perfect predictions named <case>.nii.gz
        pred = trained.root / "ro_pred"
        pred.mkdir(exist_ok=True)
        for case_dir in cohort.iterdir():
            shutil.copy2(case_dir / f"{case_dir.name}-seg.nii.gz", pred / f"{case_dir.name}.nii.gz")
        args[1] = pred

    proc = run_cli(verb, *args)

    assert_user_error(proc, verb, str(results), "Read-only file system", *READ_ONLY_ADVICE[verb])
    assert digests(results) == before


# --------------------------------------------------------------------------- full disk


def test_preprocess_on_a_full_disk(trained, tmpfs):
    """The cache arrays (~2.8 MB a case) do not fit: every case fails cleanly, nothing is left as done."""
    cache = tmpfs("cache", "1m")

    proc = run_cli("preprocess", "--cases", trained.cases, "--out-dir", cache)

    err = assert_user_error(proc, "preprocess", "6 of 6 cases failed", "BraTS-MET-00001-000", "is full",
                            "free space")
    assert "no space left on device" in err.lower()
    assert "brainmets index" not in err, "a full disk is no reason to re-index the cohort"
    assert not list(cache.glob("*.json")), "a case was marked complete (its JSON written) on a full disk"
    assert not list(cache.glob("*.npy"))
    _no_temporary_files(cache)


def test_training_on_a_full_disk(trained, tmpfs):
    """config.yaml fits, the checkpoint does not: torch.save's failure is reported as a full disk."""
    run = tmpfs("run", "256k")
    fill(run, leave=16 * 1024)

    proc = run_cli("train", "--config", trained.config, "--study", "modality", "--model", "unet",
                   "--subset", "t1c", "--seed", "0", "--cache", trained.cache, "--splits", trained.splits,
                   "--out-dir", run, "--no-progress")

    assert_user_error(proc, "train", str(run / "checkpoint.pt"), "no space left on device", "is full",
                      "free space")
    assert not (run / "checkpoint.pt").exists() and not (run / "model.pt").exists()
    _no_temporary_files(run)


def test_evaluate_on_a_full_disk_keeps_the_earlier_metrics(trained, tmpfs):
    cohort = Path(pd.read_csv(trained.cases, sep="\t")["root"].iloc[0])
    pred = trained.root / "full_pred"
    pred.mkdir(exist_ok=True)
    for case_dir in cohort.iterdir():
        shutil.copy2(case_dir / f"{case_dir.name}-seg.nii.gz", pred / f"{case_dir.name}.nii.gz")
    metrics = tmpfs("metrics", "256k")
    args = ["evaluate", "--pred-dir", pred, "--gt-dir", cohort, "--out", metrics / "val.tsv",
            "--lesions-out", metrics / "val_lesions.tsv"]
    assert run_cli(*args).returncode == 0
    fill(metrics)
    before = digests(metrics)

    proc = run_cli(*args)

    err = assert_user_error(proc, "evaluate", str(metrics / "val.tsv"), "is full", "free space")
    assert "no space left on device" in err.lower()
    assert digests(metrics) == before
    _no_temporary_files(metrics)
