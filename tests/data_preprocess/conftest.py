"""Small synthetic cases written as real NIfTI files, and a reference nearest-neighbour lookup.

The reference lookup works in world (scanner) coordinates through the affines only,
independently of the per-axis index arithmetic in ``brainmets.data.preprocess``, so
the tests check the geometry rather than re-running the implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainmets.constants import MODALITIES

SHAPE = (40, 44, 30)

#: Non-RAS grids (axis-aligned, oblique-free). Columns are the voxel axes.
AFFINES = {
    "ras": np.array([[1.0, 0, 0, -20], [0, 1, 0, -22], [0, 0, 1, -15], [0, 0, 0, 1]]),
    "lps": np.array([[-1.0, 0, 0, 20], [0, -1, 0, 22], [0, 0, 1, -15], [0, 0, 0, 1]]),
    # voxel axes (i, j, k) -> world (-z, -x, +y) with anisotropic voxels: "ILP"-like storage.
    "permuted": np.array([[0, -1.1, 0, 24], [0, 0, 1.3, -28], [-0.9, 0, 0, 13], [0, 0, 0, 1]]),
    # 1 x 1 x 3 mm, LPS-like, as a thick-slice acquisition.
    "thick": np.array([[-1.0, 0, 0, 20], [0, -1, 0, 22], [0, 0, 3, -45], [0, 0, 0, 1]]),
}


@dataclass
class SyntheticCase:
    case: str
    paths: dict[str, Path]
    images: dict[str, np.ndarray]  # float32 on the file's voxel grid
    seg: np.ndarray  # uint8 on the file's voxel grid
    affine: np.ndarray
    stray_label_voxel: tuple[int, int, int]  # labelled, outside the brain

    @property
    def brain(self) -> np.ndarray:
        return np.any([self.images[m] != 0 for m in MODALITIES], axis=0)


def _write(array: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_data_dtype(dtype)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    nib.save(image, path)


def make_case(root: Path, case: str, affine: np.ndarray, seed: int = 0,
              shape: tuple[int, int, int] = SHAPE) -> SyntheticCase:
    """An off-centre brain ellipsoid with two lesions (ET rim, NETC core, SNFH edema).

    Each sequence has its own smooth ramp along a different voxel axis plus noise, so a
    swapped channel or a wrong flip cannot pass a value comparison. One labelled voxel
    lies outside the brain, to check that the crop keeps every labelled voxel.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float64)
    centre = np.array(shape) * np.array([0.55, 0.45, 0.5])
    radii = np.array(shape) * np.array([0.33, 0.36, 0.36])
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0

    seg = np.zeros(shape, dtype=np.uint8)
    for offset, radius in (((3, -2, 1), 6.0), ((-6, 5, -3), 3.5)):
        distance = np.sqrt(sum((g - c - o) ** 2 for g, c, o in zip(grid, centre, offset)))
        seg[(distance <= radius) & brain] = 2
        seg[distance <= 0.6 * radius] = 3
        seg[distance <= 0.3 * radius] = 1
    stray = (int(centre[0]), int(centre[1]), int(centre[2] + radii[2]) + 2)
    assert not brain[stray] and stray[2] < shape[2] - 2
    seg[stray] = 2

    root.mkdir(parents=True, exist_ok=True)
    case_dir = root / case
    case_dir.mkdir(exist_ok=True)
    paths: dict[str, Path] = {}
    images: dict[str, np.ndarray] = {}
    for channel, modality in enumerate(MODALITIES):
        axis = channel % 3
        ramp = 200.0 + 150.0 * (channel + 1) * grid[axis] / shape[axis]
        lesion_boost = 80.0 * (channel + 1) * (seg > 0)
        data = (ramp + lesion_boost + rng.normal(0, 15, shape)) * brain
        images[modality] = data.astype(np.float32)
        paths[modality] = case_dir / f"{case}-{modality}.nii.gz"
        _write(images[modality], affine, paths[modality], np.float32)
    paths["seg"] = case_dir / f"{case}-seg.nii.gz"
    _write(seg, affine, paths["seg"], np.uint8)
    stored_affine = nib.load(paths["seg"]).affine  # the header holds float32: compare with that
    return SyntheticCase(case, paths, images, seg, stored_affine, stray)


@pytest.fixture
def case_factory(tmp_path):
    def factory(kind: str, case: str | None = None, seed: int = 0) -> SyntheticCase:
        return make_case(tmp_path / "cohort", case or f"BraTS-MET-{kind}-000", AFFINES[kind], seed)

    return factory


# --------------------------------------------------------------------------- reference NN


def voxel_coordinates(shape: tuple[int, ...]) -> np.ndarray:
    """(4, N) homogeneous voxel coordinates of every voxel, C order."""
    grid = np.indices(shape).reshape(3, -1).astype(np.float64)
    return np.vstack([grid, np.ones(grid.shape[1])])


def nearest_candidates(coords: np.ndarray, tie_tol: float = 1e-4) -> list[np.ndarray]:
    """Every nearest integer index for fractional ``coords`` (3, N): both neighbours at ties.

    A tie is a coordinate within ``tie_tol`` of a half-integer; both neighbours are
    then equally near and either is a correct nearest-neighbour answer.
    """
    floor = np.floor(coords)
    frac = coords - floor
    tie = np.abs(frac - 0.5) < tie_tol
    nearest = np.where(frac < 0.5, floor, floor + 1)
    low = np.where(tie, floor, nearest).astype(np.int64)
    high = np.where(tie, floor + 1, nearest).astype(np.int64)
    return [
        np.stack([(high if pick else low)[axis] for axis, pick in enumerate(picks)])
        for picks in product((0, 1), repeat=3)
    ]


def matches_nearest(values: np.ndarray, source: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Per point: does ``values`` equal ``source`` at one of the nearest voxels of ``coords``?"""
    shape = np.array(source.shape)[:, None]
    ok = np.zeros(values.shape, dtype=bool)
    for candidate in nearest_candidates(coords):
        inside = np.all((candidate >= 0) & (candidate < shape), axis=0)
        clipped = np.clip(candidate, 0, shape - 1)
        ok |= inside & (source[tuple(clipped)] == values)
    return ok


@pytest.fixture
def ref():
    """The reference helpers above, for the test modules (conftest is not importable)."""
    from types import SimpleNamespace

    return SimpleNamespace(voxel_coordinates=voxel_coordinates, nearest_candidates=nearest_candidates,
                           matches_nearest=matches_nearest)
