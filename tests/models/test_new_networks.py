"""The networks this package builds itself: sizes against their references, and their building blocks.

Forward/backward at a tiny size on CPU for every architecture, and channels_last input for the
convolutional ones, are in ``test_registry.py`` (``TINY_SPECS`` covers these networks too).
"""

from __future__ import annotations

import pytest
import torch

from brainmets.config import validate_model
from brainmets.errors import BrainmetsError
from brainmets.models import build_model, count_parameters, model_flops
from brainmets.models.mlp_unext import shift_groups
from brainmets.models.nnformer import synapse_nnformer
from brainmets.models.residual_unet import ResidualUNet3D, features_per_level

# Obtained once (Dec 2026) in a throwaway venv: torch 2.13.0 (CPU), pytorch3dunet 1.9.6 installed with
# --no-deps plus scikit-image (the only other import of its model module);
# ResidualUNet3D / ResidualUNetSE3D(4, 3, f_maps=F, num_levels=5) counted with sum(p.numel()), output
# shape (1, 3, 64, 64, 64) for a (1, 4, 64, 64, 64) input. Loading the package's weights into
# brainmets' networks (f_maps 8, 4 levels) gave identical logits (max abs difference 0.0).
PYTORCH3DUNET_PARAMETERS = {
    ("resunet3d", 32): 28_437_443,
    ("resunetse3d", 32): 29_314_316,
    ("resunet3d", 64): 113_735_555,
    ("resunetse3d", 64): 117_234_188,
}

# Obtained once in the same venv with dynamic-network-architectures 0.4.4 (--no-deps; its U-Net path
# imports only torch and numpy): ResidualEncoderUNet(4 in, 6 stages, features 32-64-128-256-320-320,
# blocks 1-3-4-6-6-6, kernel 3, strides 1-2-2-2-2-2, 3 classes, one decoder conv per stage,
# conv_bias=True, InstanceNorm3d(eps=1e-5, affine=True), LeakyReLU, deep_supervision=False) counts
# 102_353_167 parameters, 2_316 of them in the four segmentation layers it builds but uses only
# with deep supervision (brainmets builds only the used head). Same weights gave identical logits.
DNA_RESENC_PARAMETERS = 102_353_167
DNA_UNUSED_HEADS = 2_316

# The released nnFormer BraTS network (282857341/nnFormer, nnFormer_tumor.py: embedding 96, depths
# 2-2-2-2, heads 3-6-12-24, embedding patch 4, windows 4-4-8-4, crop 128^3, 4 in, 3 classes, no deep
# supervision), instantiated once in the throwaway venv with timm's three helpers stubbed.
RELEASED_NNFORMER_BRATS_PARAMETERS = 37_600_581
# nnFormer's Synapse configuration, as quoted for nnFormer (e.g. UNETR++, IEEE TMI 2024, Table 1).
PAPER_NNFORMER_SYNAPSE_PARAMETERS = 150.5e6

# GMAC per 128^3 window, 4 sequences in, 3 out, registry defaults: this package's own counts (on the
# meta device), kept here so a change of the networks shows in the efficiency table on purpose only.
PAPER_SIZE_GMAC = {
    "resunet3d": 1882.14,
    "resunetse3d": 1882.50,
    "nnformer": 63.70,
    "mlp_unext": 14.61,
    "resenc_unet": 722.91,
}


def _meta_model(arch: str, patch=(128, 128, 128), **keys):
    with torch.device("meta"):
        return build_model(arch, validate_model(arch, {"arch": arch, "patch": list(patch), **keys}), 4, 3)


@pytest.mark.parametrize("arch, f_maps", sorted(PYTORCH3DUNET_PARAMETERS))
def test_residual_unets_match_pytorch3dunet(arch, f_maps):
    model = _meta_model(arch, patch=(64, 64, 64), f_maps=f_maps)
    assert count_parameters(model) == PYTORCH3DUNET_PARAMETERS[(arch, f_maps)]
    with torch.no_grad():
        out = model(torch.empty(1, 4, 64, 64, 64, device="meta"))
    assert tuple(out.shape) == (1, 3, 64, 64, 64)


def test_resunet_widths_follow_pytorch3dunet():
    assert features_per_level(32, 5) == [32, 64, 128, 256, 512]
    assert features_per_level([8, 16], 5) == [8, 16]
    plain = ResidualUNet3D(4, 3, [8, 16])
    se = ResidualUNet3D(4, 3, [8, 16], squeeze_excitation=True)
    # scSE with reduction 1 per block: two C x C linear layers and a C -> 1 convolution, with biases
    extra = sum(2 * (c * c + c) + (c + 1) for c in (8, 16, 8))
    assert count_parameters(se) - count_parameters(plain) == extra


def test_resenc_unet_matches_dynamic_network_architectures():
    model = _meta_model("resenc_unet")
    assert count_parameters(model) == DNA_RESENC_PARAMETERS - DNA_UNUSED_HEADS
    with torch.no_grad():
        out = model(torch.empty(1, 4, 128, 128, 128, device="meta"))
    assert tuple(out.shape) == (1, 3, 128, 128, 128)


def test_resenc_unet_blocks_start_as_their_skip():
    spec = validate_model("r", {"arch": "resenc_unet", "features": [4, 8], "blocks": [2, 2], "patch": [8] * 3})
    model = build_model("r", spec, 1, 2)
    last_norms = [m.conv2[1] for m in model.modules() if type(m).__name__ == "ResidualBlockD"]
    assert len(last_norms) == 4
    assert all(torch.count_nonzero(n.weight) == 0 and torch.count_nonzero(n.bias) == 0 for n in last_norms)


def test_nnformer_brats_configuration_matches_the_released_network():
    assert count_parameters(_meta_model("nnformer")) == RELEASED_NNFORMER_BRATS_PARAMETERS


def test_nnformer_synapse_configuration_is_the_papers_size():
    with torch.device("meta"):
        model = synapse_nnformer()
    assert count_parameters(model) == pytest.approx(PAPER_NNFORMER_SYNAPSE_PARAMETERS, rel=0.01)
    with torch.no_grad():  # its anisotropic 2x4x4 embedding maps the 64x128x128 crop back to itself
        out = model(torch.empty(1, 1, 64, 128, 128, device="meta"))
    assert tuple(out.shape) == (1, 14, 64, 128, 128)


@pytest.mark.parametrize("arch", sorted(PAPER_SIZE_GMAC))
def test_paper_size_gmac(arch):
    assert model_flops(_meta_model(arch), 4, [128] * 3) / 2e9 == pytest.approx(PAPER_SIZE_GMAC[arch], abs=0.01)


def test_nnformer_attention_windows_must_tile_the_feature_maps():
    spec = {"arch": "nnformer", "embed_dim": 12, "num_heads": [1, 1, 2, 2], "window_sizes": [3, 3, 3, 3],
            "embed_patch": 2, "patch": [16, 16, 16]}  # fmt: skip
    with pytest.raises(BrainmetsError, match=r"model 'nnf'.*\[8, 8, 8\] is not divisible by its attention window 3"):
        build_model("nnf", validate_model("nnf", spec), 4, 3)
    with pytest.raises(BrainmetsError, match="divisible by 16"):
        build_model("nnf", validate_model("nnf", {**spec, "window_sizes": [2, 2, 2, 2], "patch": [16, 16, 24]}), 4, 3)


def test_nnformer_skip_attention_uses_the_encoder_features():
    """The first decoder block of each level reads the encoder's tokens: changing them changes the output."""
    torch.manual_seed(0)
    spec = {"arch": "nnformer", "embed_dim": 12, "num_heads": [1, 1, 2, 2], "window_sizes": [2, 2, 2, 2],
            "embed_patch": 2, "drop_path": 0.0, "patch": [16, 16, 16]}  # fmt: skip
    model = build_model("nnf", validate_model("nnf", spec), 1, 2).eval()
    first_decoder_block = model.decoder[-1][0]
    assert first_decoder_block.attn.skip_attention and first_decoder_block.shift == 0
    assert model.decoder[-1][1].shift == 1 and not model.decoder[-1][1].attn.skip_attention
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        reference = model(x)
        model.skip_norms[0].bias.add_(1.0)  # only the level-0 skip changes
        assert not torch.allclose(model(x), reference)


def test_shift_groups_moves_each_group_along_one_axis_with_zero_fill():
    x = torch.arange(1.0, 6.0).view(1, 1, 1, 1, 5).repeat(1, 5, 2, 3, 1)  # 5 groups of one channel
    shifted = shift_groups(x, axis=4)
    assert shifted[0, :, 0, 0].tolist() == [
        [3.0, 4.0, 5.0, 0.0, 0.0],
        [2.0, 3.0, 4.0, 5.0, 0.0],
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [0.0, 1.0, 2.0, 3.0, 4.0],
        [0.0, 0.0, 1.0, 2.0, 3.0],
    ]
    assert torch.equal(shift_groups(x.transpose(2, 4), axis=2), shifted.transpose(2, 4))
