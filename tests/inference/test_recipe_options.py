"""Inference choices of the authors' code: logit averaging and the union label export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainmets.inference import inference_runtime, predict_single_pass, predict_two_stage, prepare_network
from brainmets.inference.labels import regions_to_labels

from .conftest import inference_settings

PATCH = (8, 8, 8)


class _WindowSum(torch.nn.Module):
    """A 'segmentor' whose three logits, everywhere in a window, are the sum of the window's first channel."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return (self.scale * x[:, :1].sum(dim=(2, 3, 4), keepdim=True)).expand(x.shape[0], 3, *x.shape[2:]).clone()


def _info():
    return {"model_name": "fake", "subset": "t1c+t1n+t2f", "in_channels": 3, "patch": list(PATCH), "spec": {}}


def _volume():
    """12 x 12 x 8: four 8^3 windows at overlap 0.5 share the centre; window logits 10, -2, -2, -2."""
    image = torch.zeros(4, 12, 12, 8)
    image[:, 0, 0, 0] = 10.0
    image[:, 0, 11, 0] = image[:, 11, 0, 0] = image[:, 11, 11, 0] = -2.0
    return image


@pytest.mark.parametrize("path", ["single_pass", "two_stage"])
def test_logit_averaging_differs_from_probability_averaging_where_windows_overlap(path):
    centre = (slice(None), slice(4, 8), slice(4, 8), slice(None))
    mean_logit = torch.sigmoid(torch.tensor((10.0 - 6.0) / 4)).item()  # 0.73: present
    mean_probability = (torch.sigmoid(torch.tensor(10.0)).item() + 3 * torch.sigmoid(torch.tensor(-2.0)).item()) / 4
    assert mean_probability < 0.5 < mean_logit
    for average, expected in (("logits", mean_logit), ("probabilities", mean_probability)):
        settings = inference_settings(overlap=0.5, batch_size=2, device="cpu", average=average)
        runtime = inference_runtime(settings)
        segmentor = prepare_network(_WindowSum(), _info(), runtime)
        if path == "single_pass":
            result = predict_single_pass(segmentor, _volume(), settings, runtime)
        else:
            accept_all = prepare_network(_Accept(), _info(), runtime)
            result = predict_two_stage(accept_all, segmentor, _volume(), settings, runtime)
            assert result.record["windows_kept"] == 4
        torch.testing.assert_close(result.probabilities[centre], torch.full_like(result.probabilities[centre], expected))
        # a voxel only one window covers is that window's sigmoid either way
        assert result.probabilities[0, 0, 0, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())


class _Accept(torch.nn.Module):
    """A 'detector' that accepts every window (logit 1)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 1)


def test_union_export_writes_et_wherever_its_channel_fires():
    # columns: WT, TC, ET probabilities of five voxels
    p = np.array(
        [
            [0.9, 0.9, 0.0],  # WT + TC -> 1 either way
            [0.9, 0.1, 0.9],  # ET without TC: nested 2, union 3
            [0.1, 0.9, 0.9],  # inner channels without WT: nested 0, union 3
            [0.1, 0.9, 0.1],  # TC without WT: nested 0, union 1
            [0.1, 0.1, 0.1],
        ]
    ).T
    assert regions_to_labels(p, rule="nested").tolist() == [1, 2, 0, 0, 0]
    assert regions_to_labels(p, rule="union").tolist() == [1, 3, 3, 1, 0]
