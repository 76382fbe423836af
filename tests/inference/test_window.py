"""inference.window: the single-pass path slides the patch (null, the old behaviour) or a larger window."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from brainmets.errors import BrainmetsError
from brainmets.inference import inference_runtime, predict_single_pass, prepare_network, sliding_window_count
from brainmets.models import build_model

from .conftest import UNET, inference_settings, model_info

RUNTIME = inference_runtime(inference_settings(device="cpu"))
# 16^3 patch, divisor 4; a volume that is no multiple of the patch, so windows overlap unevenly
SHAPE = (40, 36, 28)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return prepare_network(build_model("unet", UNET, 3, 3), model_info("unet", UNET, "segmentation"), RUNTIME)


@pytest.fixture(scope="module")
def volume():
    return torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_window_null_predicts_bitwise_what_the_patch_window_did(unet, volume, blend):
    """The code before inference.window: MONAI's sliding window at the network's patch."""
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        before = sliding_window_inference(
            volume[unet.channels].unsqueeze(0), roi_size=unet.patch, sw_batch_size=3,
            predictor=lambda batch: torch.sigmoid(unet(batch, RUNTIME)), overlap=0.25, mode=blend,
            sigma_scale=0.125, padding_mode="constant", cval=0.0,
        )[0]
    for window in (None, 1, list(unet.patch)):  # null, a multiple of 1, the patch spelt out
        result = predict_single_pass(unet, volume, inference_settings(
            overlap=0.25, batch_size=3, blend=blend, window=window, device="cpu"), RUNTIME)
        assert torch.equal(result.probabilities, before), window
        assert result.record["windows_total"] == sliding_window_count(SHAPE, unet.patch, 0.25)
    assert inference_settings().window is None  # the schema's default


def test_a_larger_window_runs_fewer_windows_and_counts_their_flops(unet, volume):
    patch_run = predict_single_pass(unet, volume, inference_settings(overlap=0.25, device="cpu"), RUNTIME)
    for window, size in ((2, (32, 32, 32)), ([40, 36, 28], SHAPE)):
        result = predict_single_pass(unet, volume, inference_settings(overlap=0.25, window=window, device="cpu"),
                                     RUNTIME)
        windows = sliding_window_count(SHAPE, size, 0.25)
        assert result.record["windows_total"] == windows < patch_run.record["windows_total"]
        scale = (size[0] * size[1] * size[2]) / 16**3
        assert result.record["gmac_per_window"] == pytest.approx(patch_run.record["gmac_per_window"] * scale)
        assert result.record["flops"] == pytest.approx(result.record["gmac_per_window"] * 2e9 * windows)
        probabilities = result.probabilities
        assert probabilities.shape == patch_run.probabilities.shape == (3, *SHAPE)
        assert float(probabilities.min()) >= 0.0 and float(probabilities.max()) <= 1.0
        # instance normalisation sees another window: the outputs change
        assert not torch.equal(probabilities, patch_run.probabilities)
    assert sliding_window_count(SHAPE, SHAPE, 0.25) == 1


@pytest.mark.parametrize("window, message", [
    ([18, 16, 16], r"window \[18, 16, 16\] must be divisible by 4 on every axis"),
    ([8, 16, 16], r"smaller than the patch on some axis"),
    (3 * [16, 16], r"expected null, an integer or 3 integers"),
])
def test_a_window_that_does_not_suit_the_network_names_it(unet, volume, window, message):
    # past the schema (which refuses the last one), as a caller building settings itself could
    settings = dataclasses.replace(inference_settings(device="cpu"), window=window)
    with pytest.raises(BrainmetsError, match=r"inference.window .* for model 'unet' \(arch dynunet.*" + message):
        predict_single_pass(unet, volume, settings, RUNTIME)


def test_a_window_needs_the_models_registry_entry(volume):
    info = {k: v for k, v in model_info("unet", UNET, "segmentation").items() if k != "spec"}
    torch.manual_seed(0)
    network = prepare_network(build_model("unet", UNET, 3, 3), info, RUNTIME)
    with pytest.raises(BrainmetsError, match="inference.window 2 needs the model's registry entry"):
        predict_single_pass(network, volume, inference_settings(window=2, device="cpu"), RUNTIME)
