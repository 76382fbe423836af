"""A seed ensemble's Table 2 rows in one pass: without and with mirroring, then with the tuned postprocessing.

:func:`ensemble_rows` is the stage's API (``brainmets ensemble`` only parses
arguments). From the raw cases of the val and test splits (the path new
patients take, :mod:`brainmets.inference.segment`) it writes, under one
ensemble's directory ``<out>/``:

* ``mean/predictions/<split>/`` and ``mirror/predictions/<split>/``: the
  seeds' probabilities averaged, without and with mirroring, both from the
  same passes (the plain prediction is the identity image of the mirror
  average: :func:`~brainmets.inference.segment.segment_case_variants`), the
  files ``brainmets segment --no-mirror`` / ``--mirror`` write;
* ``postprocessing.json``: the minimum component volumes chosen on the
  mirrored **validation** predictions only
  (:func:`~brainmets.inference.postprocess.tune_on_split`, as ``brainmets
  postprocess tune``);
* ``mirror_pp/predictions/<split>/``: the mirrored predictions with that
  decision applied (``brainmets postprocess apply``);
* with the study's own minimum volumes (the config's ``postprocessing``, which
  every other prediction of the study gets before it is written), ``mean/``
  and ``mirror/`` are then postprocessed with them in place, so that those
  rows compare with the single runs' rows; the tuning saw them untouched;
* ``<variant>/metrics/<split>.tsv`` and ``<split>_lesions.tsv`` for each
  variant and split (:func:`brainmets.evaluation.evaluate_run_split`, the
  files ``brainmets evaluate`` writes).

One process for what were a segmentation job per variant, a tuning job, a
postprocessing job and an evaluation job per variant and split: the numbers
are those of those jobs, bit for bit (``tests/segment/test_ensemble_rows.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainmets.constants import ENSEMBLE_MIRRORED, ENSEMBLE_POSTPROCESSED, ENSEMBLE_UNMIRRORED
from brainmets.errors import BrainmetsError

if TYPE_CHECKING:
    from brainmets.inference.engine import InferenceSettings

log = logging.getLogger(__name__)

#: The split the postprocessing is tuned on: never the test split.
TUNING_SPLIT = "val"


def ensemble_rows(
    runs: Sequence[str | Path],
    detectors: Sequence[str | Path],
    settings: InferenceSettings,
    cohort: str | Path,
    splits_table: str | Path,
    splits: Sequence[str],
    out_dir: str | Path,
    grid: Sequence[float],
    min_volume_mm3: Mapping[str, float] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment, tune, postprocess and evaluate one seed ensemble (module docstring); returns the decision.

    ``runs`` (and ``detectors``, one per run: two-stage members) as for
    :func:`~brainmets.inference.segment.load_model`; ``cohort``: the raw cases,
    with their ground truth (BraTS layout); ``splits``: the splits predicted and
    evaluated, the tuning split among them; ``min_volume_mm3``: the study's
    postprocessing of the ``mean`` and ``mirror`` rows (none when empty or 0).
    """
    from brainmets.data.splits import cases_in_split
    from brainmets.evaluation import evaluate_run_split, find_gt_cases
    from brainmets.inference.postprocess import DECISION_NAME, apply_to_dir, tune_on_split
    from brainmets.inference.segment import cases_of_splits, check_inputs, find_cases, load_model, segment

    splits = list(dict.fromkeys(splits))
    if TUNING_SPLIT not in splits:
        raise BrainmetsError(f"the postprocessing is tuned on the {TUNING_SPLIT} split: predict it too "
                             f"(splits given: {', '.join(splits)})")
    find_gt_cases(cohort)  # no ground truth: fail before any prediction
    out_dir = Path(out_dir)
    model = load_model(runs, detectors, settings=settings, mirror=True, postprocessing=False)
    selected = cases_of_splits(find_cases(cohort), splits_table, splits, cohort)
    for cases in selected.values():  # a missing sequence of a test case: fail before the val split is written
        check_inputs(cases, model.channels, cohort)

    def predictions(variant: str, split: str) -> Path:
        return out_dir / variant / "predictions" / split

    def evaluate(variant: str, split: str) -> None:
        df, metrics = evaluate_run_split(out_dir / variant, split, cohort, splits_table, workers=workers,
                                         progress=progress)
        log.info("%s: %d case(s) evaluated, mean lesion-wise Dice %s", metrics, df["case"].nunique(),
                 df.groupby("region", sort=False)["lesion_dice"].mean().round(4).to_dict())

    for split, cases in selected.items():
        segment(cases, model, predictions(ENSEMBLE_MIRRORED, split), source=cohort, progress=progress,
                unmirrored_dir=predictions(ENSEMBLE_UNMIRRORED, split))
    decision = tune_on_split(predictions(ENSEMBLE_MIRRORED, TUNING_SPLIT), cohort,
                             cases_in_split(splits_table, TUNING_SPLIT), TUNING_SPLIT, grid, out_dir / DECISION_NAME)
    study = {"min_volume_mm3": dict(min_volume_mm3)} if min_volume_mm3 and any(min_volume_mm3.values()) else None
    for split in selected:
        apply_to_dir(decision, predictions(ENSEMBLE_MIRRORED, split), predictions(ENSEMBLE_POSTPROCESSED, split))
        for variant in (ENSEMBLE_UNMIRRORED, ENSEMBLE_MIRRORED):
            if study is not None:
                apply_to_dir(study, predictions(variant, split), predictions(variant, split))
            evaluate(variant, split)
        evaluate(ENSEMBLE_POSTPROCESSED, split)
    if study is not None:
        for variant in (ENSEMBLE_UNMIRRORED, ENSEMBLE_MIRRORED):
            _record_postprocessing(out_dir / variant / "predictions", study["min_volume_mm3"])
    return decision


def _record_postprocessing(predictions: Path, min_volume_mm3: Mapping[str, float]) -> None:
    """Say in each split's model card that the study's minimum volumes were applied to its labels."""
    from brainmets.inference.card import CARD_NAME
    from brainmets.io import read_json, write_json

    for card_path in sorted(predictions.glob(f"*/{CARD_NAME}")):
        card = read_json(card_path)
        card["postprocessing"] = {"min_volume_mm3": dict(min_volume_mm3), "chosen_on": "the study's config"}
        write_json(card_path, card)


__all__ = ["TUNING_SPLIT", "ensemble_rows"]
