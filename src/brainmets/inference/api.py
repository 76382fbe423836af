"""Predict the cases of one or more splits and write BraTS label maps plus an inference table.

For every case of every requested split:

1. the preprocessed cache is read (:func:`brainmets.data.preprocess.load_case`);
2. WT/TC/ET probabilities are computed on the cache grid, single-pass or
   two-stage (:mod:`brainmets.inference.engine`);
3. the probabilities go back to the original grid with linear interpolation
   (:func:`~brainmets.data.preprocess.probabilities_to_original_grid`; exact
   when the cache was not resampled) and only then are thresholded into
   labels (:func:`~brainmets.inference.labels.regions_to_labels`), which gives
   smoother boundaries than upsampling a label map from a 2 mm cache; components
   below the config's ``postprocessing`` minima are then removed;
4. ``<out_dir>/predictions/<split>/<case>.nii.gz`` is written atomically,
   uint8, with the original affine and header codes.

``<out_dir>/inference/<split>.tsv`` gets one row a case (see
:data:`TABLE_COLUMNS`, which include the checkpoint predicted with: its file,
training iteration and validation score); it is written once the split is complete.

Re-running rewrites every prediction of the requested splits (no skipping):
the predictions and the table then always come from the same models and
settings, which a resumed half-run could not guarantee. A split is minutes of
work even on CPU, so the rewrite costs little.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainmets.errors import BrainmetsError
from brainmets.inference.engine import (
    InferenceSettings,
    Network,
    ReferenceModel,
    inference_runtime,
    load_network,
    predict_single_pass,
    predict_two_stage,
)
from brainmets.inference.labels import regions_to_labels
from brainmets.io import atomic_path, write_table
from brainmets.runtime import Runtime

log = logging.getLogger(__name__)

#: Columns of ``inference/<split>.tsv``, in order (two-stage runs add the detector's breakdown).
TABLE_COLUMNS = (
    "case", "seconds", "windows_total", "windows_kept", "fraction_kept", "flops", "flops_single_pass",
    "mode", "single_pass_model", "gmac_per_window", "seconds_total",
    "checkpoint", "checkpoint_iteration", "checkpoint_score",
)
TWO_STAGE_COLUMNS = (
    "single_pass_windows", "flops_detector", "flops_segmentor", "flops_segmentor_all_windows",
    "detector_logit_max", "voxels_covered_fraction",
    "detector_checkpoint", "detector_checkpoint_iteration", "detector_checkpoint_score",
)


def checkpoint_columns(path: str | Path, info: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Which weights predicted: the file's name, the training iteration and validation score it holds."""
    return {f"{prefix}checkpoint": Path(path).name, f"{prefix}checkpoint_iteration": info.get("iteration"),
            f"{prefix}checkpoint_score": info.get("val_score")}


def prediction_path(out_dir: str | Path, split: str, case: str) -> Path:
    return Path(out_dir) / "predictions" / split / f"{case}.nii.gz"


def table_path(out_dir: str | Path, split: str) -> Path:
    return Path(out_dir) / "inference" / f"{split}.tsv"


def write_labels_nifti(labels: np.ndarray, meta: Mapping[str, Any], out_path: str | Path) -> Path:
    """Write a label map that is already on the original grid (uint8, original affine, atomic)."""
    from brainmets.data.preprocess import write_original_label_nifti

    return write_original_label_nifti(labels, meta, out_path)


def reference_from_config(config: Mapping[str, Any] | None, in_channels: int) -> ReferenceModel | None:
    """The single-pass model (``modality_study.model``) of a validated config, to compare two-stage FLOPs with."""
    if config is None:
        return None
    name = config["modality_study"]["model"]
    return ReferenceModel.from_spec(name, config["models"][name], in_channels, config["inference"]["window"])


def predict_case(
    case: str,
    cache_dir: str | Path,
    out_path: str | Path,
    segmentor: Network,
    settings: InferenceSettings,
    runtime: Runtime,
    detector: Network | None = None,
    reference: ReferenceModel | None = None,
    min_volume_mm3: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Predict one cached case, write its label NIfTI and return its table row.

    ``min_volume_mm3``: per region, components below it are removed from the
    labels (the config's ``postprocessing``; :mod:`brainmets.inference.postprocess`).
    """
    from brainmets.data.preprocess import load_case, probabilities_to_original_grid

    start = time.perf_counter()
    image, _, meta = load_case(cache_dir, case)
    volume = torch.from_numpy(np.array(image, dtype=np.float32))  # a writable copy of the memory map
    if detector is None:
        result = predict_single_pass(segmentor, volume, settings, runtime)
    else:
        result = predict_two_stage(detector, segmentor, volume, settings, runtime, reference=reference)
    probabilities, _ = probabilities_to_original_grid(result.probabilities.numpy(), meta, fill=0.0)
    labels = regions_to_labels(probabilities, settings.threshold, settings.label_export)
    if min_volume_mm3:
        from brainmets.inference.postprocess import remove_small_components

        labels = remove_small_components(labels, min_volume_mm3, meta["original_spacing"])
    write_labels_nifti(labels, meta, out_path)
    row = {"case": case, **result.record, "seconds_total": time.perf_counter() - start}
    return row


def predict_splits(
    model_path: str | Path,
    cache_dir: str | Path,
    splits_path: str | Path,
    splits: Sequence[str],
    out_dir: str | Path,
    settings: InferenceSettings | None = None,
    detector_path: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, "pandas.DataFrame"]:  # noqa: F821
    """Predict every case of ``splits``; returns ``{split: inference table}`` (also written to disk).

    With ``detector_path`` the two-stage model runs (``model_path`` is its
    segmentor); ``config`` supplies the single-pass reference for its FLOP
    comparison (``modality_study.model``), the ``postprocessing`` minima and,
    when ``settings`` is None, the ``inference`` section.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from brainmets.data.splits import cases_in_split

    settings = settings or InferenceSettings.from_config(config)
    runtime = inference_runtime(settings)
    cases_by_split = {split: cases_in_split(splits_path, split) for split in dict.fromkeys(splits)}
    segmentor = load_network(model_path, runtime, task="segmentation")
    detector = load_network(detector_path, runtime, task="detection") if detector_path else None
    reference = reference_from_config(config, len(segmentor.channels)) if detector else None
    min_volume_mm3 = config["postprocessing"]["min_volume_mm3"] if config is not None else None
    selected = checkpoint_columns(model_path, segmentor.info)
    if detector is not None:
        selected |= checkpoint_columns(detector_path, detector.info, prefix="detector_")
    log.info(
        "predicting %s on %s (%s)", ", ".join(f"{s}: {len(c)} cases" for s, c in cases_by_split.items()),
        runtime.device, "two-stage" if detector else "single-pass",
    )
    tables = {}
    for split, cases in cases_by_split.items():
        rows = []
        for case in tqdm(cases, desc=f"predict {split}", unit="case", disable=not progress):
            rows.append(
                predict_case(
                    case, cache_dir, prediction_path(out_dir, split, case), segmentor, settings, runtime,
                    detector=detector, reference=reference, min_volume_mm3=min_volume_mm3,
                ) | selected
            )
        columns = list(TABLE_COLUMNS) + (list(TWO_STAGE_COLUMNS) if detector else [])
        table = pd.DataFrame(rows).reindex(columns=columns)
        write_table(table, table_path(out_dir, split))
        tables[split] = table
    return tables
