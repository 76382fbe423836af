"""Decode each case's NIfTI files once into a memory-mappable training cache.

Per case: load the four sequences and the segmentation, reorient to RAS, crop
to the brain bounding box, optionally resample to a fixed spacing, z-score each
sequence over the brain and write

- ``<out>/<case>.npy``: float32, shape ``(5, X, Y, Z)``; channels 0-3 are the
  sequences in :data:`brainmets.constants.MODALITIES` order, channel 4 is the
  label (0..3 stored as float) so that one memory map serves a training job;
- ``<out>/<case>.json``: everything needed to put a cache-grid label back onto
  the original grid (:func:`to_original_grid`, :func:`write_label_nifti`).

The JSON is written last, so its presence means the case is complete.

Geometry (the contract the inverse relies on)
---------------------------------------------
*RAS grid*: the original array reoriented with nibabel's ``io_orientation``
(axes permuted/flipped only; no interpolation, so it is exact).

*Crop*: ``[crop_start, crop_stop)`` in RAS voxels, the bounding box of the brain
(union of nonzero voxels over the four sequences) united with every labelled
voxel, grown by :data:`CROP_MARGIN` voxels and clipped to the volume.

*Cache grid* (when resampled): voxel ``i`` along an axis sits at crop voxel
coordinate ``i * scale`` with ``scale = spacing / ras_spacing``. The first cache
voxel centre coincides with the first crop voxel centre (the origin is kept, as
in ITK/MONAI), the spacing is exactly the requested one, and the number of
voxels comes from the physical extent: ``round(n_crop * ras_spacing / spacing)``.
Positions past the last crop voxel (at most ``1 - scale/2`` voxels) take edge
values. Images are sampled linearly, labels and the brain mask with nearest
neighbour (ties, e.g. at half-voxel positions, go to the higher index). The
inverse samples the cache at crop voxel ``j`` -> cache coordinate ``j / scale``
with the same nearest-neighbour rule. Without resampling the cache grid *is*
the crop and the round trip is exact.

``cache_affine`` in the metadata is the voxel-to-world matrix of the cache grid
(RAS, diagonal), so a cache array can also be saved as a NIfTI for inspection.

Why a separable resampler instead of ``scipy.ndimage.zoom``: axis-aligned
resampling factorises into three 1-D passes, which is faster on CPU (see
benchmarks/results/preprocess.md) and makes the coordinate mapping above explicit
(``zoom`` aligns corners or edges depending on ``grid_mode`` and so does not
give the exact target spacing).
"""

from __future__ import annotations

import logging
import time
from operator import itemgetter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brainmets.boxes import bounding_box
from brainmets.constants import MODALITIES, SEG_SUFFIX
from brainmets.errors import BrainmetsError, CaseError
from brainmets.io import atomic_path, read_json, write_json
from brainmets.nifti import (
    VALID_LABELS,
    Grid,
    check_finite,
    check_labels,
    check_same_grid,
    grid_of,
    read_image,
    read_voxels,
)
from brainmets.parallel import parallel_map

log = logging.getLogger(__name__)

#: Bump when the cache layout or the geometry contract changes; older caches are rebuilt.
FORMAT_VERSION = 1
#: Voxels (original resolution) added around the brain/label bounding box.
CROP_MARGIN = 2
#: Channel of the label in the cache array.
LABEL_CHANNEL = len(MODALITIES)
#: Files a case needs, keyed as in cases.tsv.
SOURCE_KEYS: tuple[str, ...] = (*MODALITIES, SEG_SUFFIX)
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)

__all__ = [
    "FORMAT_VERSION",
    "CROP_MARGIN",
    "LABEL_CHANNEL",
    "SOURCE_KEYS",
    "cache_paths",
    "preprocess_case",
    "preprocess_cases",
    "preprocess_unlabelled",
    "load_sources",
    "load_unlabelled_sources",
    "reorient_and_crop",
    "cache_grid",
    "to_cache_grid",
    "resample",
    "zscore_over_brain",
    "cache_metadata",
    "write_cache",
    "load_case",
    "to_original_grid",
    "probabilities_to_original_grid",
    "write_label_nifti",
    "write_original_label_nifti",
    "write_original_nifti",
]


# --------------------------------------------------------------------------- paths


def cache_paths(cache_dir: str | Path, case: str) -> tuple[Path, Path]:
    """``(<cache_dir>/<case>.npy, <cache_dir>/<case>.json)``."""
    cache_dir = Path(cache_dir)
    return cache_dir / f"{case}.npy", cache_dir / f"{case}.json"


# --------------------------------------------------------------------------- stages


def load_sources(case: str, paths: Mapping[str, str | Path]) -> dict[str, Any]:
    """Read the four sequences and the segmentation, checking they share one grid.

    Returns ``{"images": [4 arrays], "seg": uint8 array, "affine", "shape", "zooms",
    "qform_code", "sform_code"}`` on the original voxel grid. The images keep their
    stored dtype (header scaling applied): conversion to float32 happens after the
    crop, on roughly half the voxels.
    """
    missing_keys = [k for k in SOURCE_KEYS if k not in paths]
    if missing_keys:
        raise CaseError(case, None, f"no path given for {', '.join(missing_keys)}",
                        f"expected paths for {', '.join(SOURCE_KEYS)}")

    seg_path = Path(paths[SEG_SUFFIX])
    seg_img = read_image(case, seg_path, SEG_SUFFIX)
    seg_grid = grid_of(seg_path, seg_img)
    seg = check_labels(read_voxels(case, seg_path, seg_img), case, seg_path)

    images: list[np.ndarray] = []
    for modality in MODALITIES:
        path = Path(paths[modality])
        img = read_image(case, path, modality)
        check_same_grid(case, grid_of(path, img), seg_grid)
        data = read_voxels(case, path, img)
        check_finite(case, path, data)
        images.append(data)
    return _sources(images, seg, seg_grid, seg_img.header)


def load_unlabelled_sources(case: str, paths: Mapping[str, str | Path]) -> dict[str, Any]:
    """:func:`load_sources` for a case without segmentation (segmenting new patients).

    ``paths`` holds some of the four sequences (at least one); the first of them in
    :data:`MODALITIES` order sets the grid the others must share. An absent sequence
    becomes an all-zero volume, so it adds nothing to the brain mask of
    :func:`reorient_and_crop`; with all four present the images equal the labelled
    path's. ``seg`` is all background.
    """
    if not any(modality in paths for modality in MODALITIES):
        raise CaseError(case, None, "no sequence given", f"expected paths for some of {', '.join(MODALITIES)}")
    images: list[np.ndarray | None] = []
    reference = header = None
    for modality in MODALITIES:
        if modality not in paths:
            images.append(None)
            continue
        path = Path(paths[modality])
        img = read_image(case, path, modality)
        grid = grid_of(path, img)
        if reference is None:
            reference, header = grid, img.header
        else:
            check_same_grid(case, grid, reference, expected="all sequences on the same voxel grid")
        data = read_voxels(case, path, img)
        check_finite(case, path, data)
        images.append(data)
    absent = np.zeros(reference.shape, dtype=np.uint8)
    return _sources([absent if image is None else image for image in images], absent, reference, header)


def _sources(images: list[np.ndarray], seg: np.ndarray, grid: Grid, header: Any) -> dict[str, Any]:
    return {
        "images": images,
        "seg": seg,
        "affine": grid.affine,
        "shape": grid.shape,
        "zooms": [float(z) for z in header.get_zooms()[:3]],
        "qform_code": int(header.get("qform_code", 1)),
        "sform_code": int(header.get("sform_code", 1)),
    }


def reorient_and_crop(images: Sequence[np.ndarray], seg: np.ndarray, affine: np.ndarray,
                      case: str = "?") -> dict[str, Any]:
    """Reorient to RAS (exact axis permutation/flips) and crop to brain + labels.

    ``images``: the four sequences (any dtype) on the original grid. Returns the
    cropped images as one float32 ``(4, x, y, z)`` array, the cropped label and brain
    mask (C-contiguous copies) and the geometry (orientation, RAS shape/affine/spacing,
    crop box).
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    shape = seg.shape
    ornt = io_orientation(affine)
    # apply_orientation only flips and transposes: these are views, copied once, cropped.
    ras_images = [apply_orientation(channel, ornt) for channel in images]
    ras_seg = apply_orientation(seg, ornt)
    ras_affine = affine @ inv_ornt_aff(ornt, shape)
    ras_spacing = np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0))

    brain = ras_images[0] != 0
    for channel in ras_images[1:]:
        brain |= channel != 0
    if not brain.any():
        raise CaseError(case, None, "all four sequences are zero everywhere",
                        "expected skull-stripped images with a nonzero brain")
    box = bounding_box(brain | (ras_seg > 0), margin=CROP_MARGIN)
    start, stop = [s.start for s in box], [s.stop for s in box]
    cropped = np.empty((len(ras_images), *(b - a for a, b in zip(start, stop))), dtype=np.float32)
    for channel, ras_channel in enumerate(ras_images):
        cropped[channel] = ras_channel[box]
    return {
        "images": cropped,
        "seg": np.ascontiguousarray(ras_seg[box]),
        "brain": np.ascontiguousarray(brain[box]),
        "orientation": ornt,
        "ras_shape": tuple(int(s) for s in ras_seg.shape),
        "ras_affine": ras_affine,
        "ras_spacing": ras_spacing,
        "crop_start": start,
        "crop_stop": stop,
    }


def cache_grid(crop_shape: Sequence[int], ras_spacing: Sequence[float],
               spacing: Sequence[float] | None) -> tuple[tuple[int, ...], np.ndarray, bool]:
    """Shape of the cache grid, ``scale`` (cache step in crop voxels) and whether to resample.

    The shape comes from the physical extent of the crop; a requested spacing equal to
    the native one (within 0.1 %) means no resampling.
    """
    ras_spacing = np.asarray(ras_spacing, dtype=np.float64)
    if spacing is None or np.allclose(spacing, ras_spacing, rtol=1e-3, atol=0):
        return tuple(int(n) for n in crop_shape), np.ones(3), False
    spacing = np.asarray(spacing, dtype=np.float64)
    scale = spacing / ras_spacing
    extent = np.asarray(crop_shape) * ras_spacing
    shape = tuple(max(1, int(np.floor(e / s + 0.5))) for e, s in zip(extent, spacing))
    return shape, scale, True


def resample(array: np.ndarray, positions: Sequence[np.ndarray], order: int) -> np.ndarray:
    """Sample the last three axes of ``array`` at per-axis voxel ``positions``.

    ``positions[a]`` holds, for every output index along spatial axis ``a``, the
    (fractional) source index to sample. ``order=0``: nearest neighbour (index
    ``floor(p + 0.5)``, i.e. ties go up), ``order=1``: linear. Positions outside the
    source take the edge value. Leading axes (channels) are carried along.
    """
    lead = array.ndim - 3
    if order == 0:
        index = [
            np.clip(np.floor(np.asarray(p, dtype=np.float64) + 0.5), 0, n - 1).astype(np.intp)
            for p, n in zip(positions, array.shape[lead:])
        ]
        return array[(Ellipsis, *np.ix_(*index))]
    if order != 1:
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), not {order}")
    out = array
    # Shrinking axes first keeps the intermediate arrays small.
    ratios = [len(p) / array.shape[lead + a] for a, p in enumerate(positions)]
    for axis in np.argsort(ratios, kind="stable"):
        out = _linear_along_axis(out, np.asarray(positions[axis], dtype=np.float64), lead + axis)
    return out


def zscore_over_brain(images: np.ndarray, brain: np.ndarray, case: str = "?",
                      paths: Mapping[str, str | Path] | None = None,
                      absent: Sequence[str] = ()) -> list[dict[str, float] | None]:
    """Z-score each channel in place over ``brain`` voxels; set voxels outside to 0.

    Statistics are accumulated in float64. Returns ``[{"mean", "std"}]`` per channel,
    ``None`` for the ``absent`` sequences (all zero, left so; unlabelled cases only).
    """
    stats: list[dict[str, float] | None] = []
    outside = ~brain
    for channel, modality in enumerate(MODALITIES):
        if modality in absent:
            stats.append(None)
            continue
        values = images[channel][brain]
        mean = float(values.mean(dtype=np.float64))
        std = float(values.std(dtype=np.float64))
        if not std > 0:
            raise CaseError(case, (paths or {}).get(modality), f"{modality} is constant over the brain",
                            "cannot z-score a sequence without contrast")
        channel_view = images[channel]
        channel_view -= np.float32(mean)
        channel_view *= np.float32(1.0 / std)
        channel_view[outside] = 0.0
        stats.append({"mean": mean, "std": std})
    return stats


def write_cache(out_dir: str | Path, case: str, cache: np.ndarray, meta: Mapping[str, Any]) -> Path:
    """Write ``<case>.npy`` then ``<case>.json``, each atomically; the JSON marks completion."""
    npy_path, json_path = cache_paths(out_dir, case)
    # A stale .json next to a new .npy would claim completeness: remove it first.
    json_path.unlink(missing_ok=True)
    with atomic_path(npy_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, cache, allow_pickle=False)
    write_json(json_path, meta)
    return npy_path


# --------------------------------------------------------------------------- one case


def preprocess_case(case: str, paths: Mapping[str, str | Path], out_dir: str | Path,
                    spacing: Sequence[float] | None = None, overwrite: bool = False) -> Path:
    """Build ``<out_dir>/<case>.npy`` and ``.json`` from the case's five NIfTI files.

    ``paths`` maps ``t1n, t1c, t2w, t2f, seg`` to files. ``spacing`` (mm, RAS axis
    order) resamples the cache; ``None`` keeps the native grid. Idempotent: a complete
    cache built from the same sources with the same spacing is kept as is (unless
    ``overwrite``); any other is rebuilt. Returns the ``.npy`` path.
    """
    spacing = _check_spacing(case, spacing)
    out_dir = Path(out_dir)
    npy_path, json_path = cache_paths(out_dir, case)
    sources = {key: str(paths[key]) for key in SOURCE_KEYS if key in paths}
    if not overwrite and _is_complete(npy_path, json_path, sources, spacing):
        log.debug("%s: cache is complete, kept (%s)", case, npy_path)
        return npy_path

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage], clock = now - clock, now

    loaded = load_sources(case, paths)
    lap("load")
    cropped = reorient_and_crop(loaded.pop("images"), loaded["seg"], loaded["affine"], case)
    lap("reorient_crop")
    grid = to_cache_grid(cropped, spacing)
    lap("resample")
    stats = zscore_over_brain(grid["cache"][:LABEL_CHANNEL], grid["brain"], case, paths)
    lap("zscore")
    meta = cache_metadata(case, sources, spacing, loaded, cropped, grid, stats)
    write_cache(out_dir, case, grid["cache"], meta)
    lap("write")
    log.debug("%s: %s", case, ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    return npy_path


def preprocess_unlabelled(case: str, paths: Mapping[str, str | Path],
                          spacing: Sequence[float] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The cache of a case without segmentation, in memory: ``(image (4, X, Y, Z) float32, meta)``.

    The stages of :func:`preprocess_case` (same functions, same order) on the
    sequences in ``paths`` (see :func:`load_unlabelled_sources`); an absent sequence
    stays an all-zero channel. ``meta`` is the ``<case>.json`` record, so
    :func:`probabilities_to_original_grid` maps predictions back to the case's grid.
    With all four sequences the result equals the labelled cache's images unless a
    label reached outside the brain (the crop then grew to hold it).
    """
    spacing = _check_spacing(case, spacing)
    loaded = load_unlabelled_sources(case, paths)
    cropped = reorient_and_crop(loaded.pop("images"), loaded["seg"], loaded["affine"], case)
    grid = to_cache_grid(cropped, spacing)
    absent = [modality for modality in MODALITIES if modality not in paths]
    stats = zscore_over_brain(grid["cache"][:LABEL_CHANNEL], grid["brain"], case, paths, absent=absent)
    sources = {key: str(paths[key]) for key in MODALITIES if key in paths}
    meta = cache_metadata(case, sources, spacing, loaded, cropped, grid, stats)
    return grid["cache"][:LABEL_CHANNEL], meta


def to_cache_grid(cropped: Mapping[str, Any], spacing: Sequence[float] | None) -> dict[str, Any]:
    """Assemble the (5, X, Y, Z) float32 cache array (not yet z-scored) and its brain mask.

    Resamples images linearly and the label and brain mask with nearest neighbour when
    ``spacing`` differs from the native one (see the module docstring for the grid).
    """
    shape, scale, resampled = cache_grid(cropped["seg"].shape, cropped["ras_spacing"], spacing)
    cache = np.empty((LABEL_CHANNEL + 1, *shape), dtype=np.float32)
    if resampled:
        positions = [np.arange(n) * s for n, s in zip(shape, scale)]
        cache[:LABEL_CHANNEL] = resample(cropped["images"], positions, order=1)
        cache[LABEL_CHANNEL] = resample(cropped["seg"], positions, order=0)
        brain = resample(cropped["brain"], positions, order=0)
    else:
        cache[:LABEL_CHANNEL] = cropped["images"]
        cache[LABEL_CHANNEL] = cropped["seg"]
        brain = cropped["brain"]
    return {"cache": cache, "brain": brain, "shape": shape, "scale": scale, "resampled": resampled}


def cache_metadata(case: str, sources: Mapping[str, str], spacing: Sequence[float] | None,
                   loaded: Mapping[str, Any], cropped: Mapping[str, Any], grid: Mapping[str, Any],
                   stats: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """The ``<case>.json`` record: provenance, geometry to undo every step, counts."""
    scale = grid["scale"]
    cache_spacing = np.asarray(spacing, dtype=np.float64) if grid["resampled"] else cropped["ras_spacing"]
    cache_affine = cropped["ras_affine"] @ _translation(cropped["crop_start"]) @ np.diag([*scale, 1.0])
    cache_labels = grid["cache"][LABEL_CHANNEL].astype(np.uint8).ravel()
    return {
        "format_version": FORMAT_VERSION,
        "case": case,
        "modalities": list(MODALITIES),
        "label_channel": LABEL_CHANNEL,
        "sources": dict(sources),
        "original_shape": list(loaded["shape"]),
        "original_affine": loaded["affine"].tolist(),
        "original_spacing": loaded["zooms"],
        "original_qform_code": loaded["qform_code"],
        "original_sform_code": loaded["sform_code"],
        "orientation": cropped["orientation"].tolist(),
        "ras_shape": list(cropped["ras_shape"]),
        "ras_affine": cropped["ras_affine"].tolist(),
        "ras_spacing": cropped["ras_spacing"].tolist(),
        "crop_start": cropped["crop_start"],
        "crop_stop": cropped["crop_stop"],
        "crop_margin": CROP_MARGIN,
        "requested_spacing": None if spacing is None else list(spacing),
        "spacing": cache_spacing.tolist(),
        "resampled": grid["resampled"],
        "cache_shape": list(grid["shape"]),
        "cache_affine": cache_affine.tolist(),
        "cache_to_crop_scale": scale.tolist(),
        "brain_voxels": int(grid["brain"].sum()),
        "normalization": {modality: None if stat is None else dict(stat) for modality, stat in zip(MODALITIES, stats)},
        "label_counts": _counts(cache_labels),
        "original_label_counts": _counts(loaded["seg"].ravel()),
    }


# --------------------------------------------------------------------------- many cases


def preprocess_cases(cases: Mapping[str, Mapping[str, str | Path]], out_dir: str | Path,
                     spacing: Sequence[float] | None = None, workers: int = 1,
                     overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Preprocess ``{case: paths}`` into ``out_dir``, in a process pool when ``workers > 1``.

    Every case is attempted; a failing case leaves no output of its own (writes are
    atomic) and does not disturb the others. Failures are reported together at the
    end as one :class:`BrainmetsError` naming each case and file.
    """
    jobs = [(case, dict(paths), str(out_dir), spacing, overwrite) for case, paths in cases.items()]
    done: list[Path] = []
    failures: list[str] = []
    file_problems: list[bool] = []
    # Each worker holds one case (~0.5 GB at 240x240x155); numpy runs single-threaded.
    results = parallel_map(_preprocess_one, jobs, workers=workers, desc="preprocess", progress=progress,
                           name=itemgetter(0))
    for path, error, file_problem in results:
        _collect(path, error, done, failures)
        file_problems.append(file_problem)
    if failures:
        listing = "\n".join(f"  - {message}" for message in failures)
        advice = ""
        if any(file_problems):
            # `brainmets index` validated these files: they changed since. Say how to get going again.
            advice = ("\nfix or restore the named files and run `brainmets index` again (it checks every "
                      "file), or leave the cases out with `brainmets index --on-bad-case skip`")
        raise BrainmetsError(f"{len(failures)} of {len(jobs)} cases failed to preprocess "
                             f"(the other cases were written):\n{listing}{advice}")
    return done


def _preprocess_one(job: tuple) -> tuple[Path | None, str | None, bool]:
    """Worker: ``(npy path, None, False)`` or ``(None, message, is a problem of the case's files)``.

    Exceptions do not cross processes (CaseError does not pickle), so errors travel as text.
    """
    case, paths, out_dir, spacing, overwrite = job
    try:
        return preprocess_case(case, paths, out_dir, spacing=spacing, overwrite=overwrite), None, False
    except CaseError as exc:
        return None, str(exc), True
    except BrainmetsError as exc:  # e.g. the cache cannot be written (disk full, read-only)
        return None, f"{case}: {exc}", False
    except MemoryError:
        return None, f"{case}: out of memory while preprocessing (use fewer --workers)", False
    except Exception as exc:  # a bug, not bad data: keep the traceback in the log
        log.exception("%s: unexpected error while preprocessing", case)
        return None, f"{case}: unexpected {type(exc).__name__}: {exc}", False


def _collect(path: Path | None, error: str | None, done: list[Path], failures: list[str]) -> None:
    if error is None:
        done.append(path)
    else:
        log.error("%s", error)
        failures.append(error)


# --------------------------------------------------------------------------- reading


def load_case(cache_dir: str | Path, case: str,
              mmap: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(image (4, X, Y, Z), label (X, Y, Z), meta)`` of a preprocessed case.

    With ``mmap`` the arrays are read-only views into a memory map, so selecting
    channels (``image[subset_channels(key)]``) or a patch reads only those bytes.
    """
    npy_path, json_path = cache_paths(cache_dir, case)
    hint = "run `brainmets preprocess` for this case"
    if not json_path.is_file():
        problem = "preprocessed cache is incomplete (no metadata)" if npy_path.is_file() \
            else "preprocessed cache missing"
        raise CaseError(case, json_path, problem, hint)
    try:
        meta = read_json(json_path)
    except BrainmetsError as exc:
        raise CaseError(case, json_path, f"cache metadata unreadable: {exc}", hint) from exc
    if not npy_path.is_file():
        raise CaseError(case, npy_path, "preprocessed cache array missing", hint)
    try:
        array = np.load(npy_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CaseError(case, npy_path, f"cache array is corrupt or truncated ({exc})", hint) from exc
    expected = (LABEL_CHANNEL + 1, *meta.get("cache_shape", ()))
    if array.shape != expected or array.dtype != np.float32:
        raise CaseError(case, npy_path, f"cache array is {array.dtype} {array.shape}",
                        f"expected float32 {expected} as recorded in {json_path}; {hint}")
    return array[:LABEL_CHANNEL], array[LABEL_CHANNEL], meta


# --------------------------------------------------------------------------- inverse


def to_original_grid(label_cache: np.ndarray, meta: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Put a cache-grid label map back on the original grid: ``(uint8 array, affine)``.

    Nearest neighbour back to the crop (when resampled), pasted into a background
    RAS volume, reoriented to the original axes. Without resampling this is the exact
    inverse of the preprocessing.
    """
    label_cache = np.asarray(label_cache)
    if label_cache.ndim != 3:
        raise BrainmetsError(f"{meta['case']}: label map must be 3D (X, Y, Z), got {label_cache.shape}")
    _check_cache_shape(label_cache.shape, meta, "label map")
    low, high = (label_cache.min(), label_cache.max()) if label_cache.size else (0, 0)
    if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 255):
        raise BrainmetsError(f"{meta['case']}: label map values must be finite labels in 0..255, "
                             f"got range [{low}, {high}]")
    labels = np.rint(label_cache).astype(np.uint8) if label_cache.dtype.kind == "f" \
        else label_cache.astype(np.uint8, copy=False)
    return _back_to_original(labels, meta, order=0, fill=0), np.asarray(meta["original_affine"])


def probabilities_to_original_grid(maps: np.ndarray, meta: Mapping[str, Any],
                                   fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`to_original_grid` for float maps ``(C, X, Y, Z)`` or ``(X, Y, Z)``.

    Linear interpolation back to the crop (so thresholding after the inverse gives
    smoother boundaries than thresholding before), ``fill`` outside the crop.
    Returns ``(float32 array in the original shape, affine)``.
    """
    maps = np.asarray(maps, dtype=np.float32)
    _check_cache_shape(maps.shape[-3:], meta, "probability map")
    return _back_to_original(maps, meta, order=1, fill=fill), np.asarray(meta["original_affine"])


def write_label_nifti(label_cache: np.ndarray, meta: Mapping[str, Any], out_path: str | Path) -> Path:
    """Write a cache-grid label map as a uint8 NIfTI on the case's original grid (atomic)."""
    labels, _ = to_original_grid(label_cache, meta)
    return write_original_label_nifti(labels, meta, out_path)


def write_original_label_nifti(labels: np.ndarray, meta: Mapping[str, Any], out_path: str | Path) -> Path:
    """Write a label map already on the original grid: uint8, original affine and qform/sform codes, atomic."""
    expected = tuple(int(n) for n in meta["original_shape"])
    if labels.shape != expected:
        raise BrainmetsError(f"{meta['case']}: label map {labels.shape} is not on the original grid {expected}")
    return write_original_nifti(labels, meta, out_path, np.uint8, "brainmets labels 1=NETC 2=SNFH 3=ET")


def write_original_nifti(array: np.ndarray, meta: Mapping[str, Any], out_path: str | Path, dtype,
                         description: str) -> Path:
    """Write an array on the original grid (3-D, or 4-D with volumes last) as ``dtype``, atomic.

    The case's original affine and qform/sform codes, mm units, ``description`` in ``descrip``.
    """
    import nibabel as nib

    affine = np.asarray(meta["original_affine"], dtype=np.float64)
    image = nib.Nifti1Image(array.astype(dtype, copy=False), affine)
    header = image.header
    header.set_data_dtype(dtype)
    header.set_xyzt_units("mm", "sec")
    header.set_qform(affine, code=int(meta.get("original_qform_code", 1)) or 1)
    header.set_sform(affine, code=int(meta.get("original_sform_code", 1)) or 1)
    header["descrip"] = description.encode()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        nib.save(image, tmp)
    return out_path


# --------------------------------------------------------------------------- helpers


def _back_to_original(array: np.ndarray, meta: Mapping[str, Any], order: int, fill: float) -> np.ndarray:
    from nibabel.orientations import apply_orientation, ornt_transform

    start = np.asarray(meta["crop_start"], dtype=int)
    stop = np.asarray(meta["crop_stop"], dtype=int)
    crop_shape = tuple(int(n) for n in stop - start)
    if meta["resampled"]:
        scale = np.asarray(meta["cache_to_crop_scale"], dtype=np.float64)
        positions = [np.arange(n) / s for n, s in zip(crop_shape, scale)]
        array = resample(array, positions, order=order)
    elif array.shape[-3:] != crop_shape:
        raise BrainmetsError(f"{meta['case']}: cache shape {array.shape[-3:]} does not match "
                             f"the crop {crop_shape} recorded in its metadata")
    lead = array.shape[:-3]
    ras = np.full((*lead, *meta["ras_shape"]), fill, dtype=array.dtype)
    ras[(Ellipsis, *(slice(a, b) for a, b in zip(start, stop)))] = array
    back = ornt_transform(_RAS, np.asarray(meta["orientation"], dtype=float))
    if lead:
        flat = ras.reshape(-1, *meta["ras_shape"])
        out = np.stack([apply_orientation(volume, back) for volume in flat]).reshape(
            *lead, *meta["original_shape"])
    else:
        out = apply_orientation(ras, back)
    if tuple(out.shape[-3:]) != tuple(meta["original_shape"]):  # pragma: no cover - metadata bug
        raise BrainmetsError(f"{meta['case']}: inverse produced shape {out.shape[-3:]}, "
                             f"expected {tuple(meta['original_shape'])}")
    return np.ascontiguousarray(out)


def _linear_along_axis(array: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    n = array.shape[axis]
    if n == 1:
        return np.repeat(array, len(positions), axis=axis)
    clipped = np.clip(positions, 0, n - 1)
    lower = np.minimum(np.floor(clipped).astype(np.intp), n - 2)
    weight = (clipped - lower).astype(np.float32)
    shape = [1] * array.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    low = np.take(array, lower, axis=axis).astype(np.float32, copy=False)
    high = np.take(array, lower + 1, axis=axis).astype(np.float32, copy=False)
    high -= low
    high *= weight
    low += high
    return low


def _translation(offset: Sequence[float]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def _counts(labels: np.ndarray) -> dict[str, int]:
    """Voxels per BraTS label of a flat uint8 label array (bincount: no sort of 9M voxels)."""
    totals = np.bincount(labels, minlength=len(VALID_LABELS))
    return {str(label): int(totals[label]) for label in VALID_LABELS}


def _check_spacing(case: str, spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
        raise CaseError(case, None, f"invalid spacing {list(spacing)}",
                        "expected three positive numbers in mm (RAS axis order)")
    return values


def _check_cache_shape(shape: Sequence[int], meta: Mapping[str, Any], what: str) -> None:
    if tuple(shape[-3:]) != tuple(meta["cache_shape"]):
        raise BrainmetsError(f"{meta['case']}: {what} has spatial shape {tuple(shape[-3:])}, "
                             f"expected the cache shape {tuple(meta['cache_shape'])}")


def _is_complete(npy_path: Path, json_path: Path, sources: Mapping[str, str],
                 spacing: tuple[float, ...] | None) -> bool:
    if not (npy_path.is_file() and json_path.is_file()):
        return False
    try:
        meta = read_json(json_path)
        shape, _, dtype = _npy_header(npy_path)
    except (BrainmetsError, ValueError, OSError):
        return False
    requested = None if spacing is None else list(spacing)
    return (
        meta.get("format_version") == FORMAT_VERSION
        and meta.get("sources") == dict(sources)
        and meta.get("requested_spacing") == requested
        and shape == (LABEL_CHANNEL + 1, *meta.get("cache_shape", ()))
        and dtype == np.float32
        and npy_path.stat().st_size >= int(np.prod(shape)) * 4
    )


def _npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from a .npy header, without reading the data."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        if major == 1:
            return np.lib.format.read_array_header_1_0(fh)
        return np.lib.format.read_array_header_2_0(fh)
