"""Two-stage gating: rejected windows are never segmented, kept windows are averaged where they overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainmets.errors import BrainmetsError
from brainmets.inference import inference_runtime, predict_two_stage, prepare_network, window_starts
from brainmets.models import build_model

from .conftest import DETECTOR, SEGMENTOR, inference_settings, model_info

SETTINGS = inference_settings(overlap=0.5, batch_size=4, device="cpu")
RUNTIME = inference_runtime(SETTINGS)


def _networks(detector_bias: float):
    torch.manual_seed(0)
    detector = build_model("detector", DETECTOR, 3, 1)
    torch.nn.init.zeros_(detector.class_layers.out.weight)
    torch.nn.init.constant_(detector.class_layers.out.bias, detector_bias)
    segmentor = build_model("segmentor", SEGMENTOR, 3, 3)
    detector = prepare_network(detector, model_info("detector", DETECTOR, "detection", 3, 1), RUNTIME)
    segmentor = prepare_network(segmentor, model_info("segmentor", SEGMENTOR, "segmentation"), RUNTIME)
    calls = []  # batch sizes the segmentor was called with (hooked after its FLOPs were counted)
    segmentor.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return detector, segmentor, calls


# a volume smaller than one window along z: it is padded, and the output keeps the input shape
SHAPE = (40, 24, 12)


def test_detector_rejecting_everything_means_no_segmentor_call_and_background():
    detector, segmentor, calls = _networks(-1e4)
    result = predict_two_stage(detector, segmentor, torch.randn(4, *SHAPE), SETTINGS, RUNTIME)
    record = result.record
    expected_windows = len(window_starts((40, 24, 16), (16, 16, 16), 0.5))
    assert record["windows_total"] == expected_windows == 4 * 2 * 1
    assert record["windows_kept"] == 0 and record["fraction_kept"] == 0.0
    assert calls == []
    assert result.probabilities.shape == (3, *SHAPE)
    assert torch.count_nonzero(result.probabilities) == 0
    assert record["flops"] == pytest.approx(detector.flops_per_window * expected_windows)
    assert record["flops_segmentor"] == 0


def test_detector_accepting_everything_segments_every_window_in_batches():
    detector, segmentor, calls = _networks(1e4)
    result = predict_two_stage(detector, segmentor, torch.randn(4, *SHAPE), SETTINGS, RUNTIME)
    record = result.record
    n = record["windows_total"]
    assert record["windows_kept"] == n and record["fraction_kept"] == 1.0
    assert sum(calls) == n and len(calls) == math.ceil(n / SETTINGS.batch_size)
    assert record["voxels_covered_fraction"] == 1.0
    assert record["flops"] == pytest.approx((detector.flops_per_window + segmentor.flops_per_window) * n)
    # without a reference model, the single-pass comparison is the segmentor on every window
    assert record["flops_single_pass"] == pytest.approx(segmentor.flops_per_window * n)
    assert 0 < result.probabilities.min() and result.probabilities.max() < 1


class _MeanDetector(torch.nn.Module):
    """Accepts windows whose mean of channel 0 exceeds 0.5."""

    def forward(self, x):
        return (x[:, 0].mean(dim=(1, 2, 3)) - 0.5).reshape(-1, 1) * 100


class _MeanSegmentor(torch.nn.Module):
    """Outputs, in every voxel and channel, the mean of its window's channel 0 (as a probability)."""

    def forward(self, x):
        mean = x[:, 0].mean(dim=(1, 2, 3)).clamp(1e-4, 1 - 1e-4)
        return torch.logit(mean).reshape(-1, 1, 1, 1, 1).expand(x.shape[0], 3, *x.shape[2:])


def test_overlapping_windows_are_averaged_and_uncovered_voxels_are_background():
    shape, patch = (24, 20, 16), (8, 8, 8)
    ramp = np.broadcast_to(np.linspace(0.05, 0.95, shape[0])[:, None, None], shape) * 0.6
    ramp = ramp + np.broadcast_to(np.linspace(0, 0.35, shape[1])[None, :, None], shape)
    image = torch.zeros(4, *shape)
    # the subset t1c+t1n+t2f reads cache channels [0, 1, 3] (MODALITIES order: t1n, t1c, t2w, t2f),
    # so the networks see cache channel 0 (t1n) as their channel 0
    image[0] = torch.from_numpy(ramp.astype(np.float32))
    info = {"model_name": "fake", "subset": "t1c+t1n+t2f", "in_channels": 3, "patch": list(patch), "spec": {}}
    detector = prepare_network(_MeanDetector(), info, RUNTIME)
    segmentor = prepare_network(_MeanSegmentor(), info, RUNTIME)
    result = predict_two_stage(detector, segmentor, image, SETTINGS, RUNTIME)

    total, count, kept = np.zeros(shape), np.zeros(shape), 0
    for x, y, z in window_starts(shape, patch, 0.5):
        mean = ramp[x : x + 8, y : y + 8, z : z + 8].mean()
        if mean > 0.5:
            kept += 1
            total[x : x + 8, y : y + 8, z : z + 8] += mean
            count[x : x + 8, y : y + 8, z : z + 8] += 1
    expected = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    assert 0 < kept < result.record["windows_total"]  # the test exercises both kinds of windows
    assert result.record["windows_kept"] == kept
    assert (count > 1).any() and (count == 0).any()
    for channel in range(3):
        np.testing.assert_allclose(result.probabilities[channel].numpy(), expected, atol=1e-5)


def test_mismatched_patches_are_an_error():
    detector, segmentor, _ = _networks(0.0)
    detector.patch = (32, 32, 32)
    with pytest.raises(BrainmetsError, match="detector patch"):
        predict_two_stage(detector, segmentor, torch.randn(4, *SHAPE), SETTINGS, RUNTIME)
