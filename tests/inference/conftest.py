"""Tiny cached cases (real NIfTI -> real preprocess_case) and tiny trained-model files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainmets.config import validate_model, validate_section
from brainmets.constants import MODALITIES
from brainmets.data.preprocess import preprocess_case
from brainmets.inference import InferenceSettings
from brainmets.models import build_model, save_trained

#: (case, split, original shape, affine): non-RAS storage on purpose, so the inverse matters.
CASES = [
    ("BraTS-MET-90001-000", "val", (26, 30, 22), np.array([[-1.0, 0, 0, 13], [0, -1, 0, 15], [0, 0, 1, -11], [0, 0, 0, 1]])),
    ("BraTS-MET-90002-000", "test", (24, 22, 28), np.array([[0, -1.0, 0, 11], [0, 0, 1.2, -14], [-1.1, 0, 0, 12], [0, 0, 0, 1]])),
]
PATCH = [16, 16, 16]
# registry entries as the config validator hands them to build_model (defaults filled)
SEGMENTOR = validate_model("segmentor", {"arch": "dynunet", "filters": [4, 8, 16, 16], "residual": True,
                                         "deep_supervision": 2, "patch": PATCH})
UNET = validate_model("unet", {"arch": "dynunet", "filters": [4, 8, 16], "residual": False, "deep_supervision": 0,
                               "patch": PATCH})
DETECTOR = validate_model("detector", {"arch": "densenet121", "init_features": 4, "growth_rate": 4,
                                       "block_config": [1, 1], "bn_size": 2, "patch": PATCH})


def inference_settings(**keys) -> InferenceSettings:
    """Settings from an ``inference`` section holding ``keys`` (the schema's defaults for the rest)."""
    return InferenceSettings(**validate_section("inference", keys))
SUBSET = "t1c+t1n+t2f"


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    nib.save(image, path)


def write_case(root: Path, case: str, shape, affine, seed: int) -> dict[str, Path]:
    """A brain ellipsoid with one lesion (ET rim, NETC core, SNFH edema), in BraTS-MET layout."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=float)
    centre = np.array(shape) / 2
    brain = sum(((g - c) / (0.4 * n)) ** 2 for g, c, n in zip(grid, centre, shape)) <= 1
    distance = np.sqrt(sum((g - c - 1) ** 2 for g, c in zip(grid, centre)))
    seg = np.zeros(shape, np.uint8)
    seg[(distance <= 4) & brain] = 2
    seg[distance <= 2.5] = 3
    seg[distance <= 1.2] = 1
    paths = {}
    (root / case).mkdir(parents=True, exist_ok=True)
    for channel, modality in enumerate(MODALITIES):
        data = (300 + 50 * channel * (seg > 0) + rng.normal(0, 10, shape)) * brain
        paths[modality] = root / case / f"{case}-{modality}.nii.gz"
        _write_nifti(data, affine, paths[modality], np.float32)
    paths["seg"] = root / case / f"{case}-seg.nii.gz"
    _write_nifti(seg, affine, paths["seg"], np.uint8)
    return paths


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """Two cases preprocessed twice: native grid (``cache``) and resampled to 2 mm (``cache_2mm``)."""
    root = tmp_path_factory.mktemp("inference_cohort")
    sources = {}
    for seed, (case, _, shape, affine) in enumerate(CASES):
        sources[case] = write_case(root / "raw", case, shape, affine, seed)
        preprocess_case(case, sources[case], root / "cache")
        preprocess_case(case, sources[case], root / "cache_2mm", spacing=(2.0, 2.0, 2.0))
    splits = root / "splits.tsv"
    pd.DataFrame({"case": [c[0] for c in CASES], "split": [c[1] for c in CASES]}).to_csv(splits, sep="\t", index=False)
    return {"root": root, "cache": root / "cache", "cache_2mm": root / "cache_2mm", "splits": splits, "sources": sources}


def model_info(name: str, spec: dict, task: str, in_channels: int = 3, out_channels: int = 3) -> dict:
    return {
        "model_name": name, "spec": spec, "in_channels": in_channels, "out_channels": out_channels,
        "subset": SUBSET, "task": task, "patch": spec["patch"], "iteration": 1, "seed": 0,
    }


def save_model(path: Path, name: str, spec: dict, task: str, detector_bias: float | None = None) -> Path:
    torch.manual_seed(0)
    out_channels = 1 if task == "detection" else 3
    model = build_model(name, spec, 3, out_channels)
    if detector_bias is not None:  # a detector with a fixed verdict: logit == bias for every window
        torch.nn.init.zeros_(model.class_layers.out.weight)
        torch.nn.init.constant_(model.class_layers.out.bias, detector_bias)
    save_trained(path, model, model_info(name, spec, task, 3, out_channels))
    return path


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "unet": save_model(root / "unet" / "model.pt", "unet", UNET, "segmentation"),
        "segmentor": save_model(root / "segmentor" / "model.pt", "segmentor", SEGMENTOR, "segmentation"),
        "detector": save_model(root / "detector" / "model.pt", "detector", DETECTOR, "detection"),
        "detector_accept_all": save_model(root / "accept" / "model.pt", "detector", DETECTOR, "detection", 50.0),
    }
