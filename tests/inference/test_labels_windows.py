"""Region -> label conversion and window grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainmets.inference import (
    inference_runtime,
    predict_single_pass,
    prepare_network,
    regions_to_labels,
    sliding_window_count,
    window_starts,
)

from .conftest import inference_settings


def test_labels_follow_nesting():
    # columns: WT, TC, ET probabilities of six voxels
    p = np.array(
        [
            [0.9, 0.9, 0.0],  # WT + TC -> NETC (1)
            [0.9, 0.1, 0.0],  # WT only -> SNFH (2)
            [0.9, 0.9, 0.9],  # all -> ET (3)
            [0.1, 0.9, 0.9],  # inner channels without WT -> background
            [0.9, 0.1, 0.9],  # ET without TC -> SNFH, not ET
            [0.5, 0.5, 0.5],  # exactly at threshold -> background
        ]
    ).T
    assert regions_to_labels(p).tolist() == [1, 2, 3, 0, 2, 0]
    assert regions_to_labels(p).dtype == np.uint8
    assert regions_to_labels(p, threshold=0.05).tolist() == [1, 1, 3, 3, 3, 3]


def test_labels_reject_wrong_channel_count():
    with pytest.raises(Exception, match="3 region channels"):
        regions_to_labels(np.zeros((2, 4, 4, 4)))


@pytest.mark.parametrize("shape", [(16, 16, 16), (40, 23, 17), (70, 64, 33)])
def test_window_grid_covers_every_voxel_once_or_more_and_stays_inside(shape):
    patch = (16, 16, 16)
    corners = window_starts(shape, patch, 0.5)
    cover = np.zeros(shape, int)
    for x, y, z in corners:
        assert x + 16 <= shape[0] and y + 16 <= shape[1] and z + 16 <= shape[2]
        cover[x : x + 16, y : y + 16, z : z + 16] += 1
    assert cover.min() >= 1
    assert len(set(corners)) == len(corners)
    # interior steps are half a window
    assert sorted({c[0] for c in corners})[:2] in ([0], [0, 8])


class _Constant(torch.nn.Module):
    """A 3-output 'segmentor' whose logits are one constant everywhere."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(float(logit)))

    def forward(self, x):
        return self.logit.expand(x.shape[0], 3, *x.shape[2:])


def _info(patch, in_channels=3):
    return {"model_name": "fake", "subset": "t1c+t1n+t2f", "in_channels": in_channels, "patch": list(patch), "spec": {}}


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("shape", [(20, 24, 18), (12, 30, 16)])
def test_sliding_window_count_matches_monai_and_constant_output_is_preserved(shape, blend):
    settings = inference_settings(overlap=0.5, batch_size=3, blend=blend, device="cpu")
    runtime = inference_runtime(settings)
    network = prepare_network(_Constant(0.8), _info((8, 16, 16)), runtime)
    result = predict_single_pass(network, torch.randn(4, *shape), settings, runtime)
    assert result.record["windows_total"] == sliding_window_count(shape, (8, 16, 16), 0.5)
    assert result.probabilities.shape == (3, *shape)
    torch.testing.assert_close(result.probabilities, torch.full((3, *shape), torch.sigmoid(torch.tensor(0.8)).item()))
