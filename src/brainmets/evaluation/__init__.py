"""Evaluation: legacy and BraTS 2023 lesion-wise Dice / HD95 (BraTS-MET settings).

Torch-free on purpose: `brainmets evaluate` stays light. See :mod:`.api` for the
entry points and :mod:`.lesionwise` for the rules.
"""

from brainmets.evaluation.api import (
    CASE_COLUMNS,
    LESION_COLUMNS,
    cases_from_table,
    evaluate_case,
    evaluate_dirs,
    evaluate_files,
    evaluate_run_split,
    evaluate_to_files,
    find_gt_cases,
    find_predictions,
)
from brainmets.evaluation.lesionwise import (
    DILATION_ITERATIONS,
    LESION_VOLUME_THRESHOLD_MM3,
    evaluate_region,
)
from brainmets.evaluation.surface import HD95_EMPTY_PENALTY, hd95

__all__ = [
    "CASE_COLUMNS",
    "LESION_COLUMNS",
    "DILATION_ITERATIONS",
    "LESION_VOLUME_THRESHOLD_MM3",
    "HD95_EMPTY_PENALTY",
    "cases_from_table",
    "evaluate_case",
    "evaluate_dirs",
    "evaluate_files",
    "evaluate_region",
    "evaluate_run_split",
    "evaluate_to_files",
    "find_gt_cases",
    "find_predictions",
    "hd95",
]
