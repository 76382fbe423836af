"""Tiny trained runs (real training on real preprocessed NIfTI cases) for the segment tests.

The cases come from the inference tests' writer (a brain ellipsoid with one
lesion, stored with non-RAS affines); the runs are trained with the training
tests' tiny config for a few steps: the weights need not be good, only real
and different per seed.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from brainmets.config import validate_config
from brainmets.data.preprocess import preprocess_case
from brainmets.training.loop import RunRequest, train

from ..inference.conftest import write_case
from ..training.conftest import TINY_CONFIG

SUBSET = "t1c+t1n+t2f"
#: (case, split, shape, affine): training cases, then the "new patients" to segment.
CASES = [
    ("BraTS-MET-80001-000", "train", (26, 30, 22), np.array([[-1.0, 0, 0, 13], [0, -1, 0, 15], [0, 0, 1, -11], [0, 0, 0, 1]])),
    ("BraTS-MET-80002-000", "train", (24, 22, 28), np.array([[0, -1.0, 0, 11], [0, 0, 1.2, -14], [-1.1, 0, 0, 12], [0, 0, 0, 1]])),
    ("BraTS-MET-80003-000", "val", (28, 26, 24), np.eye(4)),
    ("BraTS-MET-80004-000", "new", (27, 25, 23), np.array([[0, 0, 1.0, -9], [1.0, 0, 0, -12], [0, -1, 0, 10], [0, 0, 0, 1]])),
    ("BraTS-MET-80005-000", "new", (25, 28, 21), np.array([[1.1, 0, 0, -12], [0, 0, -1.0, 9], [0, 1.0, 0, -13], [0, 0, 0, 1]])),
]
NEW = [case for case, split, _, _ in CASES if split == "new"]


def _config() -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["training"]["segmentation"]["iterations"] = 4
    config["training"]["detection"]["iterations"] = 4
    config["training"]["val_every"] = 4
    config["training"]["checkpoint_every"] = 4
    config["models"]["detector"]["patch"] = config["models"]["segmentor"]["patch"]
    return validate_config(config)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Raw cases (labelled), their cache, and runs: unet seeds 0-2, a T1c-only unet, detector + segmentor."""
    root = tmp_path_factory.mktemp("segment")
    sources = {}
    for seed, (case, _, shape, affine) in enumerate(CASES):
        sources[case] = write_case(root / "raw", case, shape, affine, seed)
        preprocess_case(case, sources[case], root / "cache")
    splits = root / "splits.tsv"
    pd.DataFrame({"case": [c[0] for c in CASES], "split": [c[1] for c in CASES]}).to_csv(
        splits, sep="\t", index=False)
    config = _config()

    def run(model: str, subset: str, seed: int, study: str = "modality", detector: Path | None = None) -> Path:
        out = root / "results" / study / model / subset / f"seed{seed}"
        train(config, RunRequest(study=study, model=model, subset=subset, seed=seed, cache_dir=root / "cache",
                                 splits=splits, out_dir=out, detector=detector, threads=1), progress=False)
        return out

    runs = {f"unet{seed}": run("unet", SUBSET, seed) for seed in range(3)}
    runs["t1c"] = run("unet", "t1c", 0)
    runs["detector"] = run("detector", SUBSET, 0, study="twostage")
    runs["segmentor"] = run("segmentor", SUBSET, 0, study="twostage")
    return SimpleNamespace(root=root, raw=root / "raw", cache=root / "cache", sources=sources, runs=runs)


@pytest.fixture
def new_cases(tmp_path, trained):
    """The "new" cases copied into a BraTS-layout folder without their segmentations."""
    folder = tmp_path / "new"
    for case in NEW:
        shutil.copytree(trained.raw / case, folder / case)
        (folder / case / f"{case}-seg.nii.gz").unlink()
    return folder
