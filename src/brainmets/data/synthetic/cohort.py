"""Generate synthetic patients and write them in the BraTS-MET 2023 layout.

``<root>/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` with case ids
``BraTS-MET-00001-000`` ... Case ``i`` (1-based) draws all its randomness from
``numpy.random.SeedSequence(cohort_seed, spawn_key=(i,))``, split into
independent streams for geometry, lesions, contrast and noise, so a case is
the same whether it is generated alone, in a pool or as part of a larger
cohort, and changing e.g. the noise model does not move the lesions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from brainmets.constants import MODALITIES, SEG_SUFFIX
from brainmets.data.synthetic.anatomy import TISSUES, Anatomy, sample_anatomy
from brainmets.data.synthetic.contrast import BIAS_RMS_RANGE, compose_sequence, draw_contrast
from brainmets.data.synthetic.geometry import BRATS_SHAPE, BRATS_SPACING, SmoothField, brats_affine, random_warp
from brainmets.data.synthetic.lesions import Lesion, place_lesions, rasterize_lesions
from brainmets.data.synthetic.template import load_template
from brainmets.errors import BrainmetsError, CaseError
from brainmets.io import atomic_path
from brainmets.parallel import parallel_map

log = logging.getLogger(__name__)

CASE_FILES: tuple[str, ...] = (*MODALITIES, SEG_SUFFIX)
#: Written into each file's NIfTI ``descrip`` so a resumed run can tell it made the file.
GENERATOR_TAG = "brainmets synth v1"
MAX_CASES = 99_999


@dataclass
class SyntheticCase:
    """One synthetic patient: the four sequences (int16), the BraTS label map (uint8) and the truth behind them."""

    case_index: int
    cohort_seed: int
    spacing: float
    affine: np.ndarray
    images: dict[str, np.ndarray]
    seg: np.ndarray
    lesions: list[Lesion]
    anatomy: Anatomy

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.seg.shape  # type: ignore[return-value]

    def tissue_map(self, tissue: str) -> np.ndarray:
        """Fraction (float32 volume) of ``tissue`` ('gm', 'wm' or 'csf') of the normal anatomy, lesions ignored."""
        if tissue not in TISSUES:
            raise ValueError(f"unknown tissue {tissue!r}; expected one of {', '.join(TISSUES)}")
        return self.anatomy.dense(self.anatomy.fractions[:, TISSUES.index(tissue)])

    def brain_mask(self) -> np.ndarray:
        return self.anatomy.brain_mask()

    @property
    def description(self) -> str:
        return f"{GENERATOR_TAG} seed={self.cohort_seed} case={self.case_index}"


def case_id(index: int) -> str:
    """BraTS-MET case id of the 1-based ``index``: ``case_id(1) == 'BraTS-MET-00001-000'``."""
    if not 1 <= int(index) <= MAX_CASES:
        raise BrainmetsError(f"case index must be in 1..{MAX_CASES}, got {index}")
    return f"BraTS-MET-{int(index):05d}-000"


def case_paths(root: str | Path, case: str) -> dict[str, Path]:
    """The five files of ``case`` under ``root``, keyed by suffix."""
    return {suffix: Path(root) / case / f"{case}-{suffix}.nii.gz" for suffix in CASE_FILES}


def _check_grid(shape: Sequence[int], spacing: float) -> tuple[tuple[int, int, int], float]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise BrainmetsError(f"shape must be three sizes of at least 8 voxels, got {shape}")
    if not spacing > 0:
        raise BrainmetsError(f"spacing must be a positive number of mm, got {spacing}")
    return shape, float(spacing)  # type: ignore[return-value]


def generate_case(
    case_index: int,
    cohort_seed: int,
    shape: Sequence[int] = BRATS_SHAPE,
    spacing: float = BRATS_SPACING,
) -> SyntheticCase:
    """Generate patient ``case_index`` (1-based) of the cohort drawn with ``cohort_seed``."""
    case_id(case_index)  # validates the index
    shape, spacing = _check_grid(shape, spacing)
    streams = np.random.SeedSequence(int(cohort_seed), spawn_key=(int(case_index),)).spawn(4)
    geometry_rng, lesion_rng, contrast_rng, noise_rng = (np.random.default_rng(s) for s in streams)

    template = load_template(spacing)
    warp = random_warp(geometry_rng, shape, spacing, template.brain_centre)
    anatomy = sample_anatomy(template, warp)

    lesions = place_lesions(lesion_rng, anatomy, spacing)
    regions = rasterize_lesions(lesions, anatomy, spacing)
    seg = np.zeros(shape, dtype=np.uint8)
    if regions is not None:
        seg[regions.box] = regions.labels()
        low = np.array([s.start for s in regions.box])
        local = np.flatnonzero(regions.wt > 0.0)
        ijk = np.stack(np.unravel_index(local, regions.wt.shape), axis=1) + low
        lesion_voxels = np.searchsorted(anatomy.index, np.ravel_multi_index(ijk.T, shape))
        lesion_fractions = np.stack(
            [regions.wt.ravel()[local], regions.tc.ravel()[local], regions.netc.ravel()[local]], axis=1
        )
    else:
        lesion_voxels = np.zeros(0, dtype=np.int64)
        lesion_fractions = np.zeros((0, 3), dtype=np.float32)

    contrast = draw_contrast(contrast_rng)
    bias = SmoothField.random(contrast_rng, shape, terms=3, rms=contrast_rng.uniform(*BIAS_RMS_RANGE))
    log_bias = anatomy.evaluate(bias)
    images = {}
    for sequence in MODALITIES:
        values = compose_sequence(
            contrast[sequence], anatomy.fractions, lesion_voxels, lesion_fractions, log_bias, noise_rng
        )
        images[sequence] = anatomy.dense(values, dtype=np.int16)

    return SyntheticCase(
        case_index=int(case_index),
        cohort_seed=int(cohort_seed),
        spacing=spacing,
        affine=brats_affine(shape, spacing),
        images=images,
        seg=seg,
        lesions=lesions,
        anatomy=anatomy,
    )


def _nifti(data: np.ndarray, affine: np.ndarray, description: str):
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    # ITK (and so the BraTS pipeline) writes both transforms with code 1 ("scanner")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = description.encode("ascii")
    return image


def write_case(root: str | Path, case: str, synthetic: SyntheticCase) -> dict[str, Path]:
    """Write the five files of ``synthetic`` as ``<root>/<case>/<case>-<suffix>.nii.gz``, each atomically.

    The label map is written last, so a case interrupted part-way is visibly
    incomplete (and regenerated by :func:`synthesize_cohort`).
    """
    paths = case_paths(root, case)
    arrays = {**synthetic.images, SEG_SUFFIX: synthetic.seg}
    for suffix in CASE_FILES:
        with atomic_path(paths[suffix]) as tmp:
            _nifti(arrays[suffix], synthetic.affine, synthetic.description).to_filename(tmp)
    return paths


def _check_existing(root: Path, index: int, seed: int, shape: tuple[int, int, int], spacing: float) -> bool:
    """True when all five files of case ``index`` exist and were made with these settings.

    Only the label map's header is read. Files from another seed, grid or
    generator are an error rather than silently mixed into the cohort.
    """
    import nibabel as nib

    case = case_id(index)
    paths = case_paths(root, case)
    if not all(p.is_file() for p in paths.values()):
        return False
    path = paths[SEG_SUFFIX]
    try:
        header = nib.load(path).header
    except Exception as exc:  # nibabel raises several types for a damaged header
        raise CaseError(case, path, f"cannot read the existing label map: {exc}", "delete the case to regenerate it")
    found = header["descrip"].tobytes().rstrip(b"\0").decode("ascii", "replace")
    expected = f"{GENERATOR_TAG} seed={seed} case={index}"
    grid = (tuple(int(s) for s in header.get_data_shape()), tuple(float(z) for z in header.get_zooms()))
    if found != expected or grid[0] != shape or not np.allclose(grid[1], spacing):
        raise CaseError(
            case,
            path,
            f"exists but was not made with these settings (found {found!r}, shape {grid[0]}, "
            f"spacing {grid[1]}; expected {expected!r}, shape {shape}, spacing {spacing})",
            "use another --out-dir or delete the old cohort",
        )
    return True


def generate_and_write(root: str | Path, index: int, seed: int, shape: Sequence[int], spacing: float) -> str:
    """Generate case ``index`` and write it under ``root``; returns its case id."""
    case = case_id(index)
    write_case(root, case, generate_case(index, seed, shape, spacing))
    return case


def synthesize_cohort(
    root: str | Path,
    n_cases: int,
    seed: int = 0,
    workers: int = 1,
    shape: Sequence[int] = BRATS_SHAPE,
    spacing: float = BRATS_SPACING,
    progress: bool = True,
) -> list[str]:
    """Write cases 1..``n_cases`` of the cohort ``seed`` under ``root``; returns their ids.

    Resumable: a case whose five files exist (from the same seed and grid) is
    kept as is. ``workers > 1`` generates cases in that many processes; each
    process loads the template once.
    """
    root = Path(root)
    shape, spacing = _check_grid(shape, spacing)
    if n_cases < 1:
        raise BrainmetsError(f"n_cases must be at least 1, got {n_cases}")
    ids = [case_id(i) for i in range(1, n_cases + 1)]
    todo = [i for i in range(1, n_cases + 1) if not _check_existing(root, i, seed, shape, spacing)]
    log.info("synthetic cohort %s: %d of %d cases present, generating %d", root, n_cases - len(todo), n_cases, len(todo))
    if not todo:
        return ids
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BrainmetsError(
            f"cannot create the cohort directory {root}: {exc.strerror}; choose a writable --out-dir"
        ) from exc
    parallel_map(partial(generate_and_write, root, seed=seed, shape=shape, spacing=spacing), todo,
                 workers=workers, desc="synth", progress=progress, name=case_id)
    return ids
