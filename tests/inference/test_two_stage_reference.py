"""The batched two-stage path equals a window-by-window reference, in both grids and every blending setting.

The reference below is the two-stage model written as plainly as possible:
one window at a time (batch 1), contiguous memory, each kept window's output
added to a running sum and weight. ``predict_two_stage`` batches the detector
and the segmentor with different batch sizes, cuts windows in the networks'
memory format and blends batch by batch; it must agree with the reference up
to float rounding.
"""

from __future__ import annotations

import pytest
import torch

from brainmets.inference import Runtime, padded_shape, predict_two_stage, prepare_network, window_starts
from brainmets.models import build_model, forward_outputs

from .conftest import DETECTOR, SEGMENTOR, inference_settings, model_info

SHAPE = (37, 30, 12)  # z is smaller than the 16^3 window: padded
PATCH = (16, 16, 16)


def reference_two_stage(detector, segmentor, channels, image, overlap, threshold, blend, average):
    """(probabilities (3, *image.shape[1:]), number of kept windows), one window at a time."""
    shape = image.shape[1:]
    full = padded_shape(shape, PATCH)
    padded = torch.zeros((image.shape[0], *full))
    padded[:, : shape[0], : shape[1], : shape[2]] = image
    if blend == "constant":
        weight = torch.ones(PATCH)
    else:
        from monai.data.utils import compute_importance_map

        weight = compute_importance_map(PATCH, mode="gaussian", sigma_scale=0.125, device="cpu").float()
    total, norm, kept = torch.zeros((3, *full)), torch.zeros(full), 0
    with torch.inference_mode():
        for x, y, z in window_starts(full, PATCH, overlap):
            region = (slice(x, x + PATCH[0]), slice(y, y + PATCH[1]), slice(z, z + PATCH[2]))
            window = padded[(channels, *region)][None].contiguous()
            if forward_outputs(detector, window)[0].item() <= threshold:
                continue
            kept += 1
            output = forward_outputs(segmentor, window)[0][0].float()
            if average == "probabilities":
                output = torch.sigmoid(output)
            total[(slice(None), *region)] += output * weight
            norm[region] += weight
    mean = torch.where(norm > 0, total / torch.where(norm > 0, norm, 1.0), 0.0)
    if average == "logits":
        mean = torch.where(norm > 0, torch.sigmoid(mean), 0.0)
    return mean[:, : shape[0], : shape[1], : shape[2]], kept


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(3)
    return build_model("detector", DETECTOR, 3, 1).eval(), build_model("segmentor", SEGMENTOR, 3, 3).eval()


def _threshold_between_logits(detector, channels, image, overlap) -> float:
    """A threshold halfway between two neighbouring detector logits near the median, so about half the
    windows are kept and float rounding cannot move a window across it."""
    full = padded_shape(image.shape[1:], PATCH)
    padded = torch.zeros((image.shape[0], *full))
    padded[:, : image.shape[1], : image.shape[2], : image.shape[3]] = image
    with torch.inference_mode():
        logits = sorted(
            forward_outputs(detector, padded[channels, x : x + PATCH[0], y : y + PATCH[1], z : z + PATCH[2]][None])[0].item()
            for x, y, z in window_starts(full, PATCH, overlap)
        )
    middle = len(logits) // 2
    assert logits[middle] - logits[middle - 1] > 1e-4, "choose another seed: two logits nearly tie"
    return (logits[middle - 1] + logits[middle]) / 2


# every blend x average in both grids; each pair of settings meets both memory formats
@pytest.mark.parametrize("mode, blend, average, channels_last", [
    ("paper", "constant", "probabilities", False), ("paper", "constant", "logits", True),
    ("paper", "gaussian", "probabilities", True), ("paper", "gaussian", "logits", False),
    ("fast", "constant", "probabilities", True), ("fast", "constant", "logits", False),
    ("fast", "gaussian", "probabilities", False), ("fast", "gaussian", "logits", True),
])
def test_batched_two_stage_equals_the_window_by_window_reference(models, mode, blend, average, channels_last):
    detector_model, segmentor_model = models
    torch.manual_seed(1)
    image = torch.randn(4, *SHAPE)
    info = model_info("detector", DETECTOR, "detection", 3, 1)
    channels = [0, 1, 3]  # t1c+t1n+t2f in the cache's channel order (t1n, t1c, t2w, t2f)
    overlap = 0.5 if mode == "paper" else 0.0
    threshold = _threshold_between_logits(detector_model, channels, image, overlap)
    expected, expected_kept = reference_two_stage(detector_model, segmentor_model, channels, image, overlap,
                                                  threshold, blend, average)

    settings = inference_settings(overlap=0.5, batch_size=3, detector_batch_size=5, device="cpu", blend=blend,
                                  average=average, detector_threshold=threshold, two_stage_mode=mode)
    runtime = Runtime.create("cpu", channels_last)
    detector = prepare_network(detector_model, info, runtime)
    segmentor = prepare_network(segmentor_model, model_info("segmentor", SEGMENTOR, "segmentation"), runtime)
    result = predict_two_stage(detector, segmentor, image, settings, runtime)
    detector_model.to(memory_format=torch.contiguous_format)
    segmentor_model.to(memory_format=torch.contiguous_format)

    n_windows = len(window_starts(padded_shape(SHAPE, PATCH), PATCH, overlap))
    assert result.record["windows_total"] == n_windows
    assert result.record["mode"] == ("two_stage" if mode == "paper" else "two_stage_fast")
    assert 0 < result.record["windows_kept"] == expected_kept < n_windows
    assert result.probabilities.shape == (3, *SHAPE)
    assert (expected == 0).any() and (expected > 0).any()  # covered and uncovered voxels both occur
    torch.testing.assert_close(result.probabilities, expected, atol=1e-5, rtol=0)

