"""Validation during training: the detector's windows run in detector batches and score as one by one."""

import pytest
import torch

from brainmets.config import validate_model, validate_section
from brainmets.inference import InferenceSettings
from brainmets.models import build_model
from brainmets.runtime import Runtime
from brainmets.training.validation import VolumeValidator

from .conftest import TINY_CONFIG

CHANNELS = [1, 3]  # t1c, t2f
VAL_CASES = ["case-004", "case-005"]
#: 36x36x28 cases in 16^3 windows at overlap 0.5: 4 x 4 x 3 windows each
WINDOWS_PER_CASE = 48


def detector_validation(tiny_data, model, patch, detector_batch_size, detector_threshold=0.0):
    """The validation scores of ``model`` and the logits of each of its calls, in order."""
    settings = InferenceSettings(**validate_section("inference", {
        "batch_size": 4, "detector_batch_size": detector_batch_size,
        "detector_threshold": detector_threshold, "device": "cpu"}))
    validator = VolumeValidator(tiny_data[0], VAL_CASES, "detection", CHANNELS, patch, settings,
                                Runtime.create("cpu", False))
    calls = []
    hook = model.register_forward_hook(lambda module, inputs, output: calls.append(output.reshape(-1).clone()))
    try:
        scores = validator(model, {})
    finally:
        hook.remove()
    return scores, calls


def test_detector_validation_runs_in_detector_batches_and_scores_as_window_by_window(tiny_data):
    torch.manual_seed(0)
    spec = validate_model("detector", TINY_CONFIG["models"]["detector"])
    model = build_model("detector", spec, len(CHANNELS), 1)
    _, calls = detector_validation(tiny_data, model, spec["patch"], 1)
    assert [len(c) for c in calls] == [1] * 2 * WINDOWS_PER_CASE
    # the threshold in the widest gap between the middle half of the logits: a
    # non-trivial F1 that float rounding cannot move a window across
    logits = torch.cat(calls).sort().values
    gaps = logits[1:] - logits[:-1]
    quarter = len(logits) // 4
    widest = quarter + int(gaps[quarter:-quarter].argmax())
    threshold = float(logits[widest] + logits[widest + 1]) / 2

    reference, _ = detector_validation(tiny_data, model, spec["patch"], 1, threshold)
    assert reference["val_windows"] == 2 * WINDOWS_PER_CASE
    assert 0 < reference["val_score"] < 1
    for batch, sizes in ((5, [5] * 9 + [3]), (128, [WINDOWS_PER_CASE])):
        scores, calls = detector_validation(tiny_data, model, spec["patch"], batch, threshold)
        assert [len(c) for c in calls] == sizes * len(VAL_CASES)
        assert scores["val_bce"] == pytest.approx(reference["val_bce"], rel=1e-5)
        for key in ("val_score", "val_precision", "val_recall", "val_windows"):
            assert scores[key] == reference[key], key
