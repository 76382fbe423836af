"""Inference: single-pass sliding window, the detector-gated two-stage model, label export.

Public API:

* :func:`predict_splits` — predict the cases of some splits, write
  ``predictions/<split>/<case>.nii.gz`` and ``inference/<split>.tsv``;
* :func:`predict_case`, :func:`predict_single_pass`, :func:`predict_two_stage`;
* :class:`InferenceSettings` (the config's ``inference`` section), :func:`inference_runtime`
  (its :class:`brainmets.runtime.Runtime`), :func:`prepare_network`, :func:`load_network`, :class:`ReferenceModel`;
* :func:`regions_to_labels`, :func:`window_starts`, :func:`sliding_window_count`.
"""

from brainmets.inference.api import (
    TABLE_COLUMNS,
    TWO_STAGE_COLUMNS,
    prediction_path,
    predict_case,
    predict_splits,
    reference_from_config,
    table_path,
    write_labels_nifti,
)
from brainmets.inference.engine import (
    CaseInference,
    InferenceSettings,
    Network,
    ReferenceModel,
    inference_runtime,
    load_network,
    predict_single_pass,
    predict_two_stage,
    prepare_network,
)
from brainmets.inference.labels import regions_to_labels
from brainmets.inference.windows import axis_starts, padded_shape, sliding_window_count, window_starts
from brainmets.runtime import Runtime, resolve_device

__all__ = [
    "TABLE_COLUMNS",
    "TWO_STAGE_COLUMNS",
    "CaseInference",
    "InferenceSettings",
    "Network",
    "ReferenceModel",
    "Runtime",
    "axis_starts",
    "inference_runtime",
    "load_network",
    "padded_shape",
    "predict_case",
    "predict_single_pass",
    "predict_splits",
    "predict_two_stage",
    "prediction_path",
    "prepare_network",
    "reference_from_config",
    "regions_to_labels",
    "resolve_device",
    "sliding_window_count",
    "table_path",
    "window_starts",
    "write_labels_nifti",
]
