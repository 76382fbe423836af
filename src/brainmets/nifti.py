"""Reading and checking the NIfTI files of a case: one reader, one grid check, one label check.

Indexing, preprocessing and evaluation open images through :func:`read_image`
and :func:`read_voxels` and check them with :func:`check_same_grid`,
:func:`check_finite` and :func:`check_labels`, so a bad file gets the same
:class:`~brainmets.errors.CaseError` wherever it is found: the case, the file
and what was expected.

A file is decoded completely when it is read (a ``.gz`` stream to its end, so
its CRC and length are checked): a truncated download or flipped bytes fail
here, naming the file, rather than half-way through a lazy read.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

from brainmets.constants import LABELS
from brainmets.errors import CaseError

#: Two images are on the same grid when every affine entry agrees to this (mm, absolute).
#: The header stores the affine as float32: its rounding is ~1.5e-5 mm at 250 mm from the origin.
AFFINE_TOLERANCE = 1e-4
#: The values a BraTS-MET label map may hold: background and the labels of ``constants.LABELS``.
VALID_LABELS: tuple[int, ...] = (0, *sorted(LABELS))
#: What a label check expects, said once for every message.
EXPECTED_LABELS = "expected integer labels " + ", ".join(
    ["0 background"] + [f"{v} {name}" for v, name in sorted(LABELS.items())]
)
#: What the grid check expects of the files of one case.
SAME_CASE_GRID = "all sequences and the segmentation on the same voxel grid"


class Grid(NamedTuple):
    """Where an image's voxels lie: its file, shape and voxel-to-world affine (float64)."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray


# --------------------------------------------------------------------------- reading


def read_image(case: str, path: str | Path, what: str) -> Any:
    """Decode a whole NIfTI-1/2 file (``.nii.gz`` or ``.nii``) into an in-memory 3-D nibabel image.

    ``what`` names the file in the message when it is missing (``t2f``,
    ``prediction``, ...). Every other problem (unreadable, corrupt gzip, not a
    NIfTI header, not 3-D) is a :class:`CaseError` naming the case and file.
    """
    import nibabel as nib

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise CaseError(case, path, f"{what} file missing") from exc
    except OSError as exc:
        raise CaseError(case, path, f"cannot read the file ({exc.strerror or exc})") from exc
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise CaseError(
                case, path, f"unreadable gzip data ({type(exc).__name__}: {exc})",
                "expected a complete gzip-compressed NIfTI file; the file is truncated or corrupt, copy it again",
            ) from exc
    if len(raw) < 4:
        raise CaseError(case, path, f"not a NIfTI file ({len(raw)} bytes after decompression)")
    # sizeof_hdr: 348 for NIfTI-1, 540 for NIfTI-2, in either byte order.
    sizeof_hdr = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    image_class = nib.Nifti2Image if 540 in sizeof_hdr else nib.Nifti1Image
    try:
        image = image_class.from_bytes(raw)
    except Exception as exc:  # nibabel raises several types for a bad header
        raise CaseError(
            case, path, f"not a valid NIfTI image ({type(exc).__name__}: {exc})",
            "expected a NIfTI-1 or NIfTI-2 image",
        ) from exc
    shape = tuple(int(s) for s in image.shape)
    if len(shape) != 3:
        raise CaseError(case, path, f"image has shape {shape} ({len(shape)}D); expected a 3D volume")
    return image


def grid_of(path: str | Path, image: Any) -> Grid:
    return Grid(Path(path), tuple(int(s) for s in image.shape), np.asarray(image.affine, dtype=np.float64))


def read_voxels(case: str, path: str | Path, image: Any) -> np.ndarray:
    """The image's voxel array (scaled by scl_slope/inter as nibabel does, in nibabel's dtype)."""
    try:
        return np.asanyarray(image.dataobj)
    except Exception as exc:  # e.g. fewer data bytes than the header's dimensions need
        raise CaseError(
            case, path, f"cannot read the voxel data ({type(exc).__name__}: {exc})",
            "the file is truncated or its header does not match its data",
        ) from exc


# --------------------------------------------------------------------------- checks


def format_shape(shape: Iterable[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def check_same_grid(case: str, grid: Grid, reference: Grid, expected: str = SAME_CASE_GRID) -> None:
    """``grid`` must be ``reference``'s voxel grid: same shape, affines within :data:`AFFINE_TOLERANCE`.

    ``expected`` says which files must share the grid, for the message.
    """
    if grid.shape != reference.shape:
        raise CaseError(
            case, grid.path,
            f"shape {format_shape(grid.shape)} differs from {reference.path.name} ({format_shape(reference.shape)})",
            f"expected {expected} (co-registered, same resolution)",
        )
    if not np.allclose(grid.affine, reference.affine, rtol=0.0, atol=AFFINE_TOLERANCE):
        diff = float(np.max(np.abs(grid.affine - reference.affine)))
        raise CaseError(
            case, grid.path,
            f"affine differs from {reference.path.name} by up to {diff:.3g} (tolerance {AFFINE_TOLERANCE:g})",
            f"expected {expected} (same orientation, origin and spacing)",
        )


def check_finite(case: str, path: str | Path, data: np.ndarray) -> None:
    """Intensities must be finite: NaN or Inf voxels are a :class:`CaseError` counting each."""
    # Integer storage cannot hold NaN; one pass settles a float image, counting only on failure.
    if data.dtype.kind != "f" or np.isfinite(data).all():
        return
    n_nan = int(np.count_nonzero(np.isnan(data)))
    n_inf = int(np.count_nonzero(np.isinf(data)))
    found = ", ".join(
        f"{n} {name} voxel{'s' if n != 1 else ''}" for n, name in ((n_nan, "NaN"), (n_inf, "Inf")) if n
    )
    raise CaseError(case, path, f"non-finite intensities: {found}", "expected finite values in every voxel")


def check_labels(data: np.ndarray, case: str, path: str | Path | None, what: str = "label") -> np.ndarray:
    """A BraTS-MET label map (the integers of :data:`VALID_LABELS`), returned as uint8.

    Integer, boolean and integral float storage are accepted. Anything else is a
    :class:`CaseError` listing the offending values and their voxel counts;
    ``what`` words it (``label``, ``prediction label``, ...).
    """
    kind = data.dtype.kind
    if kind not in "biuf":
        raise CaseError(case, path, f"{what} map has data type {data.dtype}", EXPECTED_LABELS)
    # Two reductions settle a valid map (NaN fails both comparisons); the rest only words the error.
    if kind == "b" or data.size == 0 or (
        data.min() >= 0 and data.max() <= VALID_LABELS[-1]
        and (kind != "f" or np.array_equal(data, np.round(data)))
    ):
        return data.astype(np.uint8, copy=False)
    if kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            n_bad = int(data.size - finite.sum())
            raise CaseError(
                case, path, f"non-finite {what} values in {n_bad} voxel{'s' if n_bad != 1 else ''}", EXPECTED_LABELS
            )
        fractional = data != np.round(data)
        if fractional.any():
            values, counts = np.unique(data[fractional], return_counts=True)
            raise CaseError(case, path, f"non-integer {what} values {_format_values(values, counts)}",
                            EXPECTED_LABELS)
    outside = (data < 0) | (data > VALID_LABELS[-1])
    values, counts = np.unique(data[outside], return_counts=True)
    hint = EXPECTED_LABELS
    if 4 in values and 3 not in np.unique(data):
        hint += "; label 4 is the BraTS 2021 enhancing-tumour label: relabel 4 to 3"
    raise CaseError(
        case, path,
        f"{what} values {_format_values(values, counts)} outside {{{', '.join(map(str, VALID_LABELS))}}}",
        hint,
    )


def _format_values(values: np.ndarray, counts: np.ndarray, limit: int = 8) -> str:
    shown = [f"{v:g} ({c} voxel{'s' if c != 1 else ''})" for v, c in zip(values[:limit], counts[:limit])]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(shown) + more
