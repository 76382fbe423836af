"""Tiny cached cases and a tiny config for the training tests.

The cache is written by hand in the documented format (docs/architecture.md):
``<case>.npy`` float32 ``(5, X, Y, Z)`` (4 sequences, z-scored inside the
brain and 0 outside, then the label) plus ``<case>.json``; so these tests do
not depend on the preprocessing stage.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmets.config import validate_config

SHAPE = (36, 36, 28)
PATCH = [16, 16, 16]

TINY_CONFIG = {
    "results": "results",
    "models": {
        "unet": {"arch": "dynunet", "filters": [4, 8, 16], "residual": False, "deep_supervision": 0, "patch": PATCH},
        "segmentor": {"arch": "dynunet", "filters": [4, 8, 16], "residual": True, "deep_supervision": 1,
                      "patch": PATCH},
        "detector": {"arch": "densenet121", "init_features": 4, "growth_rate": 4, "block_config": [1, 1],
                     "dropout": 0.2, "patch": PATCH},
    },
    "training": {
        "segmentation": {"iterations": 6, "batch_patients": 2, "crops_per_patient": 2},
        "detection": {"iterations": 6, "batch_patients": 2, "crops_per_patient": 2,
                      "schedule": {"warmup_iterations": 2}},
        "checkpoint_every": 2,
        "val_every": 3,
        "log_every": 1,
        "threads": 1,
        "prefetch": 1,
    },
    "tracking": {"enabled": False},
}


def make_case(cache: Path, name: str, seed: int, lesions: list[tuple[tuple[int, int, int], int]]) -> None:
    """One synthetic case: a brain ellipsoid, lesions as nested spheres (ET rim, NETC core, SNFH edema)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    centre = np.array(SHAPE).reshape(3, 1, 1, 1) / 2
    brain = (((grid - centre) / (np.array(SHAPE).reshape(3, 1, 1, 1) * 0.45)) ** 2).sum(0) <= 1
    label = np.zeros(SHAPE, np.float32)
    for (x, y, z), radius in lesions:
        dist = np.sqrt(((grid - np.array([x, y, z]).reshape(3, 1, 1, 1)) ** 2).sum(0))
        label[(dist <= radius + 2) & (label == 0)] = 2
        label[dist <= radius] = 3
        label[dist <= radius / 2] = 1
    image = rng.normal(0, 1, (4, *SHAPE)).astype(np.float32) * 0.3
    image[1] += 2.5 * (label == 3)  # T1c: enhancing tumour
    image[3] += 1.5 * (label > 0)  # FLAIR: the whole tumour
    image *= brain
    array = np.concatenate([image, label[None]]).astype(np.float32)
    np.save(cache / f"{name}.npy", array)
    meta = {
        "case": name, "modalities": ["t1n", "t1c", "t2w", "t2f"], "original_shape": list(SHAPE),
        "original_affine": np.eye(4).tolist(), "original_spacing": [1.0, 1.0, 1.0],
        "orientation": [[0, 1], [1, 1], [2, 1]], "ras_shape": list(SHAPE), "crop_start": [0, 0, 0],
        "crop_stop": list(SHAPE), "spacing": [1.0, 1.0, 1.0], "cache_shape": list(SHAPE), "resampled": False,
        "label_counts": {str(k): int((label == k).sum()) for k in range(4)},
    }
    (cache / f"{name}.json").write_text(json.dumps(meta))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(cache dir, splits.tsv): 4 train cases (one without tumour), 2 val cases."""
    root = tmp_path_factory.mktemp("tiny")
    cache = root / "cache"
    cache.mkdir()
    specs = {
        "case-000": [((12, 12, 10), 3), ((24, 22, 16), 2)],
        "case-001": [((18, 18, 14), 4)],
        "case-002": [],
        "case-003": [((10, 24, 12), 2), ((25, 12, 15), 1), ((18, 26, 18), 3)],
        "case-004": [((16, 16, 12), 3)],
        "case-005": [((20, 14, 14), 2)],
    }
    for i, (name, lesions) in enumerate(specs.items()):
        make_case(cache, name, i, lesions)
    splits = root / "splits.tsv"
    pd.DataFrame({"case": list(specs), "split": ["train"] * 4 + ["val"] * 2}).to_csv(splits, sep="\t", index=False)
    return cache, splits


@pytest.fixture
def tiny_config():
    """TINY_CONFIG validated, defaults filled: what `brainmets train` hands to train()."""
    return validate_config(copy.deepcopy(TINY_CONFIG))


@pytest.fixture(scope="session")
def case_writer():
    """``case_writer(cache_dir, name, seed, lesions)`` writes one tiny cached case (see :func:`make_case`)."""
    return make_case


def signal_at_checkpoint(command, iteration, signum, *, nth=1, timeout_s=600):
    """Run ``command``; send it ``signum`` as soon as it logs its ``nth`` checkpoint at ``iteration`` (a
    process training several runs logs one per run); return (the ended process, its whole stderr).

    ``timeout_s`` bounds the process (a healthy one takes seconds): it is killed then.
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    seen, found = [], 0
    try:
        for line in proc.stderr:
            seen.append(line)
            if re.search(rf"checkpoint written at iteration {iteration}\b", line):
                found += 1
                if found == nth:
                    os.kill(proc.pid, signum)
                    break
        seen.append(proc.stderr.read())
        proc.wait()
    finally:
        watchdog.cancel()
    return proc, "".join(seen)
