"""Fixtures writing small real BraTS-MET cases (NIfTI through nibabel) into tmp_path."""

from __future__ import annotations

import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

SHAPE = (24, 24, 16)
SUFFIXES = ("t1n", "t1c", "t2w", "t2f", "seg")


def default_seg(shape=SHAPE) -> np.ndarray:
    """Two lesions: one with an ET rim around a NETC core inside edema, one small ET blob."""
    seg = np.zeros(shape, dtype=np.uint8)
    seg[3:10, 3:10, 3:10] = 2
    seg[4:9, 4:9, 4:9] = 3
    seg[6:7, 6:7, 6:7] = 1
    seg[16:18, 16:18, 10:12] = 3
    return seg


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def write_case() -> Callable[..., Path]:
    """Write one case: ``write_case(root, case, seg=..., spacing=..., images={suffix: array})``."""

    def _write(
        root: Path,
        case: str,
        seg: np.ndarray | None = None,
        spacing=(1.0, 1.0, 1.0),
        images: dict[str, np.ndarray] | None = None,
        affines: dict[str, np.ndarray] | None = None,
        skip: tuple[str, ...] = (),
    ) -> Path:
        case_dir = Path(root) / case
        case_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(zlib.crc32(case.encode()))
        affine = np.diag([*map(float, spacing), 1.0])
        affine[:3, 3] = (-12.0, -12.0, -8.0)
        images = dict(images or {})
        affines = affines or {}
        for suffix in SUFFIXES:
            if suffix in skip:
                continue
            if suffix in images:
                data = images[suffix]
            elif suffix == "seg":
                data = default_seg() if seg is None else seg
            else:
                data = rng.uniform(10, 100, SHAPE).astype(np.float32)
            save_nifti(case_dir / f"{case}-{suffix}.nii.gz", data, affines.get(suffix, affine))
        return case_dir

    return _write


@pytest.fixture
def cohort(tmp_path, write_case) -> Path:
    """A valid cohort of three cases."""
    root = tmp_path / "cohort"
    for i in range(1, 4):
        write_case(root, f"BraTS-MET-0000{i}-000")
    return root


@pytest.fixture
def kit():
    """The helpers above, for test modules (``--import-mode=importlib`` cannot import conftest)."""
    return SimpleNamespace(SHAPE=SHAPE, default_seg=default_seg, save_nifti=save_nifti)
