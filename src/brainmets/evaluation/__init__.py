"""Evaluation: legacy and BraTS 2023 lesion-wise Dice / HD95 (BraTS-MET settings).

Torch-free on purpose: evaluation jobs stay light. See :mod:`.api` for the
entry points and :mod:`.lesionwise` for the rules.
"""

from brainmets.evaluation.api import (
    CASE_COLUMNS,
    LESION_COLUMNS,
    evaluate_case,
    evaluate_dirs,
    evaluate_files,
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
    "evaluate_case",
    "evaluate_dirs",
    "evaluate_files",
    "evaluate_region",
    "find_gt_cases",
    "find_predictions",
    "hd95",
]
