"""Discover and validate a BraTS-MET cohort, and build the case table ``cases.tsv``.

A cohort root holds one directory per case::

    <root>/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz

This module is where raw NIfTI files are checked before anything else runs.
Every problem a later stage could trip over (a missing or misnamed sequence, a
truncated download, grids that disagree, labels outside BraTS-MET's 0..3,
NaN intensities, ...) is caught here and reported as a
:class:`~brainmets.errors.CaseError` naming the case, the file and what was
expected, so that a training job hours later never fails on a bad file. The
reading and the checks themselves are :mod:`brainmets.nifti`'s, shared with
the later stages.

Each file is decoded completely, and one volume at a time is held in memory.

Only numpy, nibabel, pandas and cc3d are used: no torch or MONAI, so indexing
runs in light jobs.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from brainmets.boxes import bounding_box
from brainmets.constants import MODALITIES, SEG_SUFFIX
from brainmets.errors import BrainmetsError, CaseError
from brainmets.nifti import (
    Grid,
    check_finite,
    check_labels,
    check_same_grid,
    format_shape,
    grid_of,
    read_image,
    read_voxels,
)
from brainmets.parallel import parallel_map

log = logging.getLogger(__name__)

#: File suffixes of one case, in the order they are read and listed in ``cases.tsv``.
CASE_FILES: tuple[str, ...] = (*MODALITIES, SEG_SUFFIX)
NIFTI_EXT = ".nii.gz"

#: Columns of ``cases.tsv``, in order (the contract in docs/architecture.md).
COUNT_COLUMNS: tuple[str, ...] = ("n_lesions", "n_netc", "n_snfh", "n_et")
VOLUME_COLUMNS: tuple[str, ...] = ("vol_netc", "vol_snfh", "vol_et", "vol_wt")
CASE_COLUMNS: tuple[str, ...] = (
    "case", "status", "reason", "root", *CASE_FILES, "shape", "spacing",
    *COUNT_COLUMNS, *VOLUME_COLUMNS,
)
STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
ON_BAD_CASE = ("fail", "skip")

#: Lesions are 26-connected components (voxels touching by a face, edge or corner).
CONNECTIVITY = 26

# Names other conventions use for each file; used only to explain a misnamed file.
_ALIASES: dict[str, tuple[str, ...]] = {
    "t1n": ("t1n", "t1", "t1w", "t1native"),
    "t1c": ("t1c", "t1ce", "t1gd", "t1post", "t1wce"),
    "t2w": ("t2w", "t2"),
    "t2f": ("t2f", "flair", "t2flair"),
    "seg": ("seg", "label", "labels", "mask", "gt"),
}


# --------------------------------------------------------------------------- discovery


def discover_cases(root: str | Path) -> list[str]:
    """Case ids of a cohort: the names of the directories directly under ``root``, sorted.

    Stray files in ``root`` (a README, a zip) are ignored with a warning; hidden
    entries (``.DS_Store``, ``.snakemake``) silently. A missing root, a root that
    is not a directory or one without any case directory is a
    :class:`BrainmetsError`.
    """
    root = Path(root)
    if not root.exists():
        raise BrainmetsError(f"cohort root {root} does not exist; expected a directory with one folder per case")
    if not root.is_dir():
        raise BrainmetsError(f"cohort root {root} is not a directory")
    cases, stray = [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        (cases if entry.is_dir() else stray).append(entry.name)
    if stray:
        shown = ", ".join(stray[:10]) + (f" and {len(stray) - 10} more" if len(stray) > 10 else "")
        log.warning("ignoring %d file(s) in cohort root %s that are not case directories: %s", len(stray), root, shown)
    if not cases:
        hint = ""
        if any(name.endswith((".nii.gz", ".nii")) for name in stray):
            hint = "; the NIfTI files lie directly in the root, but each case needs its own directory"
        raise BrainmetsError(
            f"no case directories in cohort root {root}; expected "
            f"{root}/<case>/<case>-{{{','.join(CASE_FILES)}}}{NIFTI_EXT}{hint}"
        )
    return cases


def expected_path(root: str | Path, case: str, suffix: str) -> Path:
    """Where the BraTS-MET layout puts file ``suffix`` (a modality or ``seg``) of ``case``."""
    return Path(root) / case / f"{case}-{suffix}{NIFTI_EXT}"


def case_files(root: str | Path, case: str, labelled: bool = True) -> dict[str, Path]:
    """Paths of a case's four sequences and segmentation, keyed by suffix (``t1n`` ... ``seg``).

    ``labelled=False`` (a cohort to segment, not to train on): the four sequences only.

    Raises :class:`CaseError` naming every missing file, what the directory
    holds instead, and which of those look like a misnamed version of a
    missing file (``_t1c`` instead of ``-t1c``, ``t1ce``, ``flair``, ``.nii``).
    """
    case_dir = Path(root) / case
    if not case_dir.is_dir():
        raise CaseError(case, case_dir, "case directory not found")
    paths = {suffix: expected_path(root, case, suffix) for suffix in (CASE_FILES if labelled else MODALITIES)}
    missing = [suffix for suffix, path in paths.items() if not path.is_file()]
    if not missing:
        return paths
    found = sorted(p.name for p in case_dir.iterdir() if not p.name.startswith("."))
    expected = ", ".join(paths[s].name for s in missing)
    hints = [_misnamed_hint(case, suffix, found) for suffix in missing]
    hint = "; ".join(h for h in hints if h)
    found_text = ", ".join(found) if found else "nothing"
    raise CaseError(
        case,
        case_dir,
        f"missing {', '.join(missing)}: expected {expected}; found {found_text}",
        hint or None,
    )


def _misnamed_hint(case: str, suffix: str, found: Iterable[str]) -> str:
    """Point at a file that is probably ``suffix`` under another naming convention."""
    wanted = f"{case}-{suffix}{NIFTI_EXT}"
    for name in found:
        stem = name.removesuffix(".gz").removesuffix(".nii").lower()
        token = stem.replace("_", "-").rsplit("-", 1)[-1]
        if token in _ALIASES[suffix] and name != wanted:
            return f"{name} looks like the {suffix} file: rename it to {wanted}"
    return ""


# --------------------------------------------------------------------------- validation


def validate_case(root: str | Path, case: str, labelled: bool = True) -> dict[str, Any]:
    """Check every file of one case and return its ``cases.tsv`` row.

    ``labelled=False``: the case has no segmentation; its sequences are checked
    as always, the spacing comes from the first one and the ``seg``, count and
    volume columns are empty.

    Raises :class:`CaseError` on the first problem found: a missing or
    misnamed file, unreadable or corrupt data, an image that is not 3D,
    shapes or affines that disagree with the case's first sequence, non-finite
    or all-zero intensities, and segmentation values that are not the integers
    0..3. An empty segmentation is valid (a case without visible lesions).

    Counts are 26-connected components: ``n_lesions`` of the whole tumour
    (labels 1|2|3), ``n_netc``/``n_snfh``/``n_et`` of each label alone.
    Volumes are in mm^3 from the segmentation header's voxel spacing.
    """
    root_abs = Path(os.path.abspath(root))
    paths = case_files(root_abs, case, labelled)
    reference: Grid | None = None
    seg = zooms = None
    for suffix in paths:
        path = paths[suffix]
        image = read_image(case, path, suffix)
        grid = grid_of(path, image)
        if reference is None:
            reference = grid
        else:
            check_same_grid(case, grid, reference)
        data = read_voxels(case, path, image)
        if suffix == SEG_SUFFIX:
            zooms = _check_spacing(case, path, image)
            seg = check_labels(data, case, path)
        else:
            check_finite(case, path, data)
            if not np.any(data):
                raise CaseError(case, path, "all voxels are zero", "expected an MR image; the sequence is empty")
            if not labelled and zooms is None:
                zooms = _check_spacing(case, path, image)
        del image, data  # one volume in memory at a time

    assert zooms is not None and reference is not None and (seg is not None or not labelled)
    row: dict[str, Any] = {
        "case": case,
        "status": STATUS_OK,
        "reason": "",
        "root": str(root_abs),
        **{suffix: str(paths[suffix]) if suffix in paths else None for suffix in CASE_FILES},
        "shape": format_shape(reference.shape),
        "spacing": _format_spacing(zooms),
    }
    if seg is not None:
        row.update(lesion_statistics(seg, zooms))
    return row


def _check_spacing(case: str, path: Path, image: Any) -> tuple[float, ...]:
    """Voxel spacing (mm) from the header; volumes in mm^3 depend on it."""
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise CaseError(
            case, path, f"voxel spacing {zooms} in the header is not positive",
            "expected pixdim[1:4] > 0 (mm); volumes cannot be computed",
        )
    return zooms


def _format_spacing(zooms: Iterable[float]) -> str:
    # zooms are float32 in the header: round so 1.2 is written as 1.2, not 1.2000000476837158.
    return "x".join(repr(round(float(z), 6)) for z in zooms)


# --------------------------------------------------------------------------- statistics


def count_components(mask: np.ndarray) -> int:
    """Number of 26-connected components of a boolean mask."""
    import cc3d

    if not mask.any():
        return 0
    _, n = cc3d.connected_components(mask, connectivity=CONNECTIVITY, return_N=True, binary_image=True)
    return int(n)


def lesion_statistics(labels: np.ndarray, spacing: Iterable[float]) -> dict[str, float | int]:
    """Lesion counts (26-connected components) and volumes (mm^3) of a BraTS-MET label map."""
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    counts = np.bincount(labels.ravel(), minlength=4)[:4]
    whole = labels > 0
    box = bounding_box(whole)
    # Components are found inside the tumour's bounding box: same answer, a fraction of the work.
    cropped = labels[box] if box is not None else labels[:0, :0, :0]
    stats: dict[str, float | int] = {
        "n_lesions": count_components(cropped > 0),
        "n_netc": count_components(cropped == 1),
        "n_snfh": count_components(cropped == 2),
        "n_et": count_components(cropped == 3),
        "vol_netc": float(counts[1]) * voxel_mm3,
        "vol_snfh": float(counts[2]) * voxel_mm3,
        "vol_et": float(counts[3]) * voxel_mm3,
        "vol_wt": float(counts[1:].sum()) * voxel_mm3,
    }
    return stats


# --------------------------------------------------------------------------- cohort


def _index_one(root: str, case: str, labelled: bool = True) -> dict[str, Any]:
    """Worker: a case's row, or a skipped row carrying the reason (errors do not cross processes)."""
    try:
        return validate_case(root, case, labelled)
    except CaseError as exc:
        row: dict[str, Any] = {column: None for column in CASE_COLUMNS}
        row.update(case=case, status=STATUS_SKIPPED, reason=_one_line(str(exc)), root=str(root))
        return row


def _one_line(text: str) -> str:
    return " ".join(text.split())


def index_cohort(
    root: str | Path,
    on_bad_case: str = "fail",
    workers: int = 1,
    progress: bool = True,
    labelled: bool = True,
) -> "pandas.DataFrame":  # noqa: F821
    """Validate every case under ``root`` and return the case table (``CASE_COLUMNS``).

    ``labelled=False`` indexes a cohort without segmentations (cases to segment):
    every sequence is checked as usual; ``seg``, counts and volumes stay empty.

    ``on_bad_case="fail"`` checks all cases and then raises one
    :class:`BrainmetsError` listing every bad case with its problem, so a
    cohort is fixed in one round instead of one case per run.
    ``on_bad_case="skip"`` keeps bad cases in the table with
    ``status=skipped`` and the reason, and logs each of them; a cohort in
    which no case is valid is still an error.

    ``workers > 1`` validates cases in a process pool; each worker holds one
    volume at a time. Rows come back in case order whatever the worker count.
    """
    import pandas as pd

    if on_bad_case not in ON_BAD_CASE:
        raise BrainmetsError(f"on_bad_case must be one of {', '.join(ON_BAD_CASE)}, got {on_bad_case!r}")
    root_abs = os.path.abspath(root)
    cases = discover_cases(root_abs)
    rows = parallel_map(partial(_index_one, root_abs, labelled=labelled), cases, workers=workers, desc="index",
                        progress=progress)

    bad = [row for row in rows if row["status"] != STATUS_OK]
    if bad and on_bad_case == "fail":
        listing = "\n".join(f"  - {row['reason']}" for row in bad)
        raise BrainmetsError(
            f"{len(bad)} of {len(rows)} cases in {root_abs} failed validation:\n{listing}\n"
            "fix these files, or index the other cases with --on-bad-case skip "
            "(bad cases are then kept in the table with status=skipped)"
        )
    for row in bad:
        log.warning("skipping %s", row["reason"])
    if len(bad) == len(rows):
        raise BrainmetsError(
            f"none of the {len(rows)} cases in {root_abs} is valid (first problem: {bad[0]['reason']}); "
            "check the cohort root and the file naming"
        )
    table = pd.DataFrame(rows, columns=list(CASE_COLUMNS))
    for column in COUNT_COLUMNS:
        table[column] = table[column].astype("Int64")
    for column in VOLUME_COLUMNS:
        table[column] = table[column].astype("float64")
    return table


def load_cases(path: str | Path, ok_only: bool = True) -> "pandas.DataFrame":  # noqa: F821
    """Read ``cases.tsv`` written by ``brainmets index``.

    With ``ok_only`` (the default for later stages) only validated cases are
    returned, with integer counts. Raises :class:`BrainmetsError` if the file is
    missing, lacks columns, or holds duplicate cases or unknown statuses.
    """
    import pandas as pd

    from brainmets.io import read_table

    table = read_table(path, what="case table (run `brainmets index` first)")
    missing = [column for column in CASE_COLUMNS if column not in table.columns]
    if missing:
        raise BrainmetsError(
            f"case table {path} lacks column(s) {', '.join(missing)}; "
            "it was not written by `brainmets index` or is out of date: index the cohort again"
        )
    table = table[list(CASE_COLUMNS)].copy()
    table["case"] = table["case"].astype(str)
    table["reason"] = ["" if pd.isna(reason) else str(reason) for reason in table["reason"]]
    duplicated = sorted(set(table.loc[table["case"].duplicated(), "case"]))
    if duplicated:
        raise BrainmetsError(f"case table {path} lists case(s) more than once: {', '.join(duplicated)}")
    unknown = sorted(set(table["status"]) - {STATUS_OK, STATUS_SKIPPED}, key=str)
    if unknown:
        raise BrainmetsError(
            f"case table {path} has unknown status value(s) {', '.join(map(str, unknown))}; "
            f"expected {STATUS_OK} or {STATUS_SKIPPED}"
        )
    ok = table["status"] == STATUS_OK
    unlabelled = table.loc[ok & table[SEG_SUFFIX].isna() & table[list(COUNT_COLUMNS)].isna().all(axis=1), "case"].tolist()
    if unlabelled:
        raise BrainmetsError(
            f"case table {path} lists case(s) without segmentation: {', '.join(unlabelled[:10])}; it was indexed "
            "with --unlabelled, which serves `brainmets segment`: training and evaluation need labelled cases"
        )
    incomplete = table.loc[ok & table[list(COUNT_COLUMNS)].isna().any(axis=1), "case"].tolist()
    if incomplete:
        raise BrainmetsError(
            f"case table {path} has ok case(s) without lesion counts: {', '.join(incomplete[:10])}; "
            "index the cohort again"
        )
    if ok_only:
        table = table[ok].reset_index(drop=True)
        for column in COUNT_COLUMNS:
            table[column] = table[column].astype("int64")
    else:
        for column in COUNT_COLUMNS:
            table[column] = table[column].astype("Int64")
    return table
