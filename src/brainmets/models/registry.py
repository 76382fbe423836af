"""Model registry: a config entry (``models:`` section) -> a MONAI network.

Every entry names its architecture with ``arch``; the other keys size it, so one
code path builds the tiny CPU networks of the default config and the paper-size
networks. Which keys each architecture takes, their types and their defaults
(the paper's / MONAI's sizes) are written in one place, the config schema
(``$defs/arch_<name>`` in ``brainmets/schemas/config.schema.yaml``); the
builders here read an entry that schema validated and filled
(:func:`brainmets.config.load_config`, or :func:`brainmets.config.validate_model`
for an entry on its own) and check only what a schema cannot say: how a
network's depth constrains its ``patch`` (the training window, part of every
entry because UNETR's ``img_size`` and SegResNetVAE's ``input_image_size`` are
the patch, and the others are halved a fixed number of times), and the few
relations between its own sizes. So a bad patch fails when the model is built,
naming the model, not deep inside a forward pass.

All networks return raw logits (no final activation): ``out_channels`` sigmoid
channels for segmentation (WT, TC, ET), one logit for the detector.

Architectures (``arch`` values; keys and defaults in the schema):

``dynunet``
    MONAI DynUNet, the paper's 3D U-Net and two-stage segmentor. Layout rule
    (nnU-Net style, isotropic): one level per filter entry, kernel 3 at every
    level, stride 1 at the first level and 2 at every deeper level, so the patch
    must be divisible by ``2 ** (len(filters) - 1)``; the decoder upsamples with
    kernel = stride. ``kernel_size``/``strides`` override it.
    ``deep_supervision`` extra heads: at most ``len(filters) - 2``.
``densenet121``
    MONAI DenseNet (3D) patch classifier, the two-stage detector.
``monai_unet``
    MONAI UNet with residual units (the "residual U-Net" baseline; the name
    keeps it apart from the registry entry ``unet``, the paper's DynUNet).
    Stride 2 between levels.
``attentionunet``
    MONAI AttentionUnet. Stride 2 between levels.
``basicunet``
    MONAI BasicUNet (plain 3D U-Net with 4 poolings).
``vnet``
    MONAI VNet. VNet's first block repeats the input ``16 // in_channels``
    times, so ``in_channels`` must divide 16; other counts (e.g. 3 sequences)
    get a learnable 1x1x1 convolution that maps them to the next divisor of 16
    (3 -> 4 channels) in front of the network (:class:`ChannelAdapter`).
    Patch divisible by 16.
``segresnet`` / ``segresnetvae``
    MONAI SegResNet(VAE). ``num_groups`` (group norm) must divide
    ``init_filters``; null means ``min(8, init_filters)``. The VAE branch needs
    the exact input size: ``input_image_size`` = the patch. Patch divisible by
    ``2 ** (len(blocks_down) - 1)``.
``segresnetds``
    MONAI SegResNetDS, the network the authors' code builds for its SegResNet
    row (one output: MONAI's ``dsdepth`` 1). Patch divisible by
    ``2 ** (len(blocks_down) - 1)``.
``unetr``
    MONAI UNETR. ``img_size`` = the patch (UNETR accepts only that size);
    ``hidden_size`` divisible by ``num_heads``. Patch divisible by 16 (its token size).
``swinunetr`` / ``swinunetr_v2``
    MONAI SwinUNETR (``use_v2=True`` for v2). Every spatial size must be
    divisible by 32.
``resunet3d`` / ``resunetse3d``
    The authors' ResUNet and ResUNetSE: pytorch-3dunet's ``ResidualUNet3D`` /
    ``ResidualUNetSE3D`` rebuilt in :mod:`brainmets.models.residual_unet`.
    ``f_maps``: the width of the first level, doubled per level over
    ``num_levels`` levels, or one width per level. Patch divisible by
    ``2 ** (levels - 1)``.
``nnformer``
    nnFormer, reconstructed in :mod:`brainmets.models.nnformer`. Patch divisible
    by ``embed_patch * 2 ** (len(depths) - 1)``; every stage's feature map
    divisible by its window (a window larger than the map shrinks to it).
``mlp_unext``
    MLP-UNEXT, reconstructed as a volumetric UNeXt in
    :mod:`brainmets.models.mlp_unext`. Patch divisible by
    ``2 ** (len(conv_channels) + len(token_dims))``.
``resenc_unet``
    nnU-Net's residual-encoder U-Net (the ResEnc presets' network), rebuilt in
    :mod:`brainmets.models.resenc_unet`. Patch divisible by ``2 ** (len(features) - 1)``.

This package's own networks raise ``ValueError`` for sizes that do not fit
together; the registry turns it into an error naming the model.

Instance-normalised networks (dynunet, monai_unet, basicunet, swinunetr, resenc_unet) must keep
more than one voxel at their coarsest level (torch cannot instance-normalise a
single voxel in train mode), so e.g. SwinUNETR needs a patch of 64 on one axis.

Inference may slide a window larger than the patch over a volume
(``inference.window``, :func:`inference_window`) for the networks that take
any input size; UNETR, SwinUNETR, nnFormer, MLP-UNEXT and SegResNetVAE keep
their patch (``fixed_window``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from brainmets.errors import BrainmetsError
from brainmets.models.mlp_unext import MLPUNext
from brainmets.models.nnformer import NnFormer
from brainmets.models.resenc_unet import ResEncUNet
from brainmets.models.residual_unet import ResidualUNet3D, features_per_level


class ChannelAdapter(nn.Module):
    """A learnable 1x1x1 convolution in front of a network that cannot take ``in_channels``.

    Used for VNet, whose first block tiles the input ``16 // in_channels`` times
    and therefore fails for 3 input sequences. A learned projection keeps every
    sequence's information (zero-padding would too, but gives the network a dead
    channel); it costs ``in_channels * width`` weights.
    """

    def __init__(self, in_channels: int, width: int, net: nn.Module):
        super().__init__()
        self.adapter = nn.Conv3d(in_channels, width, kernel_size=1)
        self.net = net

    def forward(self, x: torch.Tensor) -> Any:
        return self.net(self.adapter(x))


@dataclass(frozen=True)
class _Arch:
    builder: Callable[[str, Mapping[str, Any], int, int, tuple[int, int, int]], nn.Module]
    #: patch must be divisible by this (per axis), given the spec
    divisor: Callable[[Mapping[str, Any]], int]
    #: whether channels_last_3d memory format suits it (convolutional networks)
    convolutional: bool = True
    #: instance-normalised at the coarsest level: training needs more than one voxel there
    instance_norm_bottleneck: bool = False
    #: takes only windows of its patch (position embeddings, token grids, a VAE branch sized for it), so
    #: inference cannot use a larger window (``inference.window``)
    fixed_window: bool = False


def dynunet_layout(
    filters: Sequence[int], spec: Mapping[str, Any] | None = None
) -> tuple[list[Any], list[int], list[int]]:
    """Kernel sizes, strides and upsampling kernels of a DynUNet with ``len(filters)`` levels.

    Rule: kernel 3 everywhere; stride 1 at the first level (full-resolution
    features), 2 at every deeper level; upsampling kernel = stride. For
    filters 32-64-128-256-320 at 128^3 this is the nnU-Net / paper network
    (bottleneck 8^3, 478 GMAC). ``spec['kernel_size']`` / ``spec['strides']``
    (when not null) override the rule.
    """
    spec = spec or {}
    levels = len(filters)
    kernels = list(spec.get("kernel_size") or [3] * levels)
    strides = list(spec.get("strides") or [1] + [2] * (levels - 1))
    return kernels, strides, strides[1:]


def _build_dynunet(name, spec, cin, cout, patch):
    from monai.networks.nets import DynUNet

    filters = list(spec["filters"])
    kernels, strides, up = dynunet_layout(filters, spec)
    if not (len(kernels) == len(strides) == len(filters)):
        raise BrainmetsError(
            f"model {name!r}: kernel_size ({len(kernels)}), strides ({len(strides)}) and "
            f"filters ({len(filters)}) must have one entry per level"
        )
    heads = spec["deep_supervision"]
    if heads > len(filters) - 2:
        raise BrainmetsError(
            f"model {name!r}: deep_supervision={heads} extra heads, but a {len(filters)}-level DynUNet "
            f"allows 0..{len(filters) - 2}"
        )
    return DynUNet(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=up,
        filters=filters,
        dropout=spec["dropout"],
        norm_name=("INSTANCE", {"affine": True}),
        deep_supervision=heads > 0,
        deep_supr_num=max(heads, 1),
        res_block=spec["residual"],
    )


def _dynunet_divisor(spec):
    _, strides, _ = dynunet_layout(spec["filters"], spec)
    return math.prod(strides)


def _build_densenet(name, spec, cin, cout, patch):
    from monai.networks.nets import DenseNet

    return DenseNet(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        init_features=spec["init_features"],
        growth_rate=spec["growth_rate"],
        block_config=tuple(spec["block_config"]),
        bn_size=spec["bn_size"],
        dropout_prob=float(spec["dropout"]),
    )


def _densenet_divisor(spec):
    # stem conv stride 2, max-pool stride 2, one stride-2 transition between blocks;
    # the final adaptive pool then needs at least one voxel per axis.
    return 2 ** (2 + len(spec["block_config"]) - 1)


def _build_monai_unet(name, spec, cin, cout, patch):
    from monai.networks.nets import UNet

    channels = list(spec["channels"])
    return UNet(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        channels=channels,
        strides=[2] * (len(channels) - 1),
        num_res_units=spec["num_res_units"],
        norm="INSTANCE",
        dropout=float(spec["dropout"]),
    )


def _build_attentionunet(name, spec, cin, cout, patch):
    from monai.networks.nets import AttentionUnet

    channels = list(spec["channels"])
    return AttentionUnet(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        channels=channels,
        strides=[2] * (len(channels) - 1),
        dropout=float(spec["dropout"]),
    )


def _levels_divisor(spec):
    return 2 ** (len(spec["channels"]) - 1)


def _build_basicunet(name, spec, cin, cout, patch):
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=3, in_channels=cin, out_channels=cout, features=tuple(spec["features"]),
        dropout=float(spec["dropout"]),
    )


def _build_vnet(name, spec, cin, cout, patch):
    from monai.networks.nets import VNet

    dropout = float(spec["dropout"])

    def make(channels: int) -> nn.Module:
        return VNet(
            spatial_dims=3,
            in_channels=channels,
            out_channels=cout,
            dropout_prob_down=dropout,
            dropout_prob_up=(dropout, dropout),
        )

    if cin > 16:
        raise BrainmetsError(f"model {name!r}: VNet takes at most 16 input channels, got {cin}")
    if 16 % cin == 0:
        return make(cin)
    width = next(d for d in (1, 2, 4, 8, 16) if d >= cin)
    return ChannelAdapter(cin, width, make(width))


def _segresnet_kwargs(name, spec):
    init_filters = spec["init_filters"]
    # group norm: MONAI's default of 8 groups cannot split fewer than 8 filters
    groups = spec["num_groups"] if spec["num_groups"] is not None else min(8, init_filters)
    if init_filters % groups:
        raise BrainmetsError(
            f"model {name!r}: SegResNet init_filters {init_filters} must be divisible by num_groups {groups}"
        )
    return {
        "init_filters": init_filters,
        "norm": ("GROUP", {"num_groups": groups}),
        "blocks_down": tuple(spec["blocks_down"]),
        "blocks_up": tuple(spec["blocks_up"]),
        "dropout_prob": spec["dropout"],
    }


def _segresnet_divisor(spec):
    return 2 ** (len(spec["blocks_down"]) - 1)


def _build_segresnet(name, spec, cin, cout, patch):
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=3, in_channels=cin, out_channels=cout, **_segresnet_kwargs(name, spec))


def _build_segresnetvae(name, spec, cin, cout, patch):
    from monai.networks.nets import SegResNetVAE

    return SegResNetVAE(
        input_image_size=list(patch),
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        vae_nz=spec["vae_nz"],
        **_segresnet_kwargs(name, spec),
    )


def _build_segresnetds(name, spec, cin, cout, patch):
    from monai.networks.nets import SegResNetDS

    return SegResNetDS(
        spatial_dims=3, in_channels=cin, out_channels=cout, init_filters=spec["init_filters"],
        blocks_down=tuple(spec["blocks_down"]), norm=spec["norm"],
    )


def _build_unetr(name, spec, cin, cout, patch):
    from monai.networks.nets import UNETR

    hidden, heads = spec["hidden_size"], spec["num_heads"]
    if hidden % heads:
        raise BrainmetsError(f"model {name!r}: UNETR hidden_size {hidden} must be divisible by num_heads {heads}")
    return UNETR(
        in_channels=cin,
        out_channels=cout,
        img_size=list(patch),
        feature_size=spec["feature_size"],
        hidden_size=hidden,
        mlp_dim=spec["mlp_dim"],
        num_heads=heads,
        dropout_rate=float(spec["dropout"]),
        spatial_dims=3,
    )


def _build_swinunetr(name, spec, cin, cout, patch, use_v2=False):
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(
        in_channels=cin,
        out_channels=cout,
        feature_size=spec["feature_size"],
        depths=tuple(spec["depths"]),
        num_heads=tuple(spec["num_heads"]),
        window_size=spec["window_size"],
        drop_rate=float(spec["dropout"]),
        spatial_dims=3,
        use_v2=use_v2,
    )


def _build_swinunetr_v2(name, spec, cin, cout, patch):
    return _build_swinunetr(name, spec, cin, cout, patch, use_v2=True)


def _own_network(name, build, **kwargs):
    """Build one of this package's networks; its ``ValueError`` becomes a registry error naming the model."""
    try:
        return build(**kwargs)
    except ValueError as error:
        raise BrainmetsError(f"model {name!r}: {error}") from None


def _resunet_widths(spec):
    return features_per_level(spec["f_maps"], spec["num_levels"])


def _build_resunet3d(name, spec, cin, cout, patch):
    return _own_network(
        name, ResidualUNet3D, in_channels=cin, out_channels=cout, f_maps=_resunet_widths(spec),
        num_groups=spec["num_groups"], squeeze_excitation=spec["arch"] == "resunetse3d",
    )  # fmt: skip


def _build_nnformer(name, spec, cin, cout, patch):
    return _own_network(
        name, NnFormer, in_channels=cin, out_channels=cout, patch=patch, embed_dim=spec["embed_dim"],
        depths=spec["depths"], num_heads=spec["num_heads"], window_sizes=spec["window_sizes"],
        embed_patch=spec["embed_patch"], drop_path=spec["drop_path"],
    )  # fmt: skip


def _nnformer_divisor(spec):
    embed_patch = spec["embed_patch"]
    largest = max(embed_patch) if isinstance(embed_patch, list) else embed_patch
    return largest * 2 ** (len(spec["depths"]) - 1)


def _build_mlp_unext(name, spec, cin, cout, patch):
    return _own_network(name, MLPUNext, in_channels=cin, out_channels=cout, conv_channels=spec["conv_channels"],
                        token_dims=spec["token_dims"])


def _build_resenc_unet(name, spec, cin, cout, patch):
    return _own_network(name, ResEncUNet, in_channels=cin, out_channels=cout, features=spec["features"],
                        blocks=spec["blocks"], decoder_convs=spec["decoder_convs"])


#: Builders by ``arch``; the schema's ``$defs/arch_<name>`` entries list the same names.
ARCHITECTURES: dict[str, _Arch] = {
    "dynunet": _Arch(_build_dynunet, _dynunet_divisor, instance_norm_bottleneck=True),
    "densenet121": _Arch(_build_densenet, _densenet_divisor),
    "monai_unet": _Arch(_build_monai_unet, _levels_divisor, instance_norm_bottleneck=True),
    "attentionunet": _Arch(_build_attentionunet, _levels_divisor),
    "basicunet": _Arch(_build_basicunet, lambda spec: 16, instance_norm_bottleneck=True),
    "vnet": _Arch(_build_vnet, lambda spec: 16),
    "segresnet": _Arch(_build_segresnet, _segresnet_divisor),
    "segresnetvae": _Arch(_build_segresnetvae, _segresnet_divisor, fixed_window=True),
    "segresnetds": _Arch(_build_segresnetds, _segresnet_divisor),
    "unetr": _Arch(_build_unetr, lambda spec: 16, convolutional=False, fixed_window=True),
    "swinunetr": _Arch(_build_swinunetr, lambda spec: 32, convolutional=False, instance_norm_bottleneck=True,
                       fixed_window=True),
    "swinunetr_v2": _Arch(_build_swinunetr_v2, lambda spec: 32, convolutional=False, instance_norm_bottleneck=True,
                          fixed_window=True),
    "resunet3d": _Arch(_build_resunet3d, lambda spec: 2 ** (len(_resunet_widths(spec)) - 1)),
    "resunetse3d": _Arch(_build_resunet3d, lambda spec: 2 ** (len(_resunet_widths(spec)) - 1)),
    "nnformer": _Arch(_build_nnformer, _nnformer_divisor, convolutional=False, fixed_window=True),
    "mlp_unext": _Arch(
        _build_mlp_unext, lambda spec: 2 ** (len(spec["conv_channels"]) + len(spec["token_dims"])),
        fixed_window=True,
    ),
    "resenc_unet": _Arch(
        _build_resenc_unet, lambda spec: 2 ** (len(spec["features"]) - 1), instance_norm_bottleneck=True
    ),
}


def resolve_arch(name: str, spec: Mapping[str, Any]) -> str:
    """The architecture of validated registry entry ``name`` (its ``arch``)."""
    return spec["arch"]


def is_convolutional(spec: Mapping[str, Any]) -> bool:
    """Whether the entry is a convolutional network (channels_last_3d helps those on CPU)."""
    return ARCHITECTURES[spec["arch"]].convolutional


def inference_window(name: str, spec: Mapping[str, Any], window: int | Sequence[int] | None) -> tuple[int, int, int]:
    """The single-pass inference window of registry entry ``name`` for the config's ``inference.window``.

    ``None``: the patch (the paper). An integer k: k times the patch. Three
    integers: that window. A window other than the patch must suit the network,
    else :class:`BrainmetsError` names the model and what is expected: a
    network that takes any window (not ``fixed_window``), at least the patch
    on every axis (a smaller one only adds windows) and divisible by the
    architecture's divisor, as the patch is.
    """
    patch = tuple(int(p) for p in spec["patch"])
    if window is None:
        return patch  # type: ignore[return-value]
    arch_name = spec["arch"]
    arch = ARCHITECTURES[arch_name]
    where = f"inference.window {window!r} for model {name!r} (arch {arch_name}, patch {list(patch)})"
    if isinstance(window, int):
        resolved = tuple(int(window) * p for p in patch)
    else:
        resolved = tuple(int(w) for w in window)
    if len(resolved) != 3:
        raise BrainmetsError(f"{where}: expected null, an integer or 3 integers")
    if resolved == patch:
        return resolved  # type: ignore[return-value]
    if arch.fixed_window:
        raise BrainmetsError(f"{where}: this architecture takes only windows of its patch; "
                             "use inference.window: null (or the patch itself)")
    if any(w < p for w, p in zip(resolved, patch)):
        raise BrainmetsError(f"{where}: window {list(resolved)} is smaller than the patch on some axis; "
                             "expected at least the patch on every axis")
    divisor = arch.divisor(spec)
    if any(w % divisor for w in resolved):
        raise BrainmetsError(f"{where}: window {list(resolved)} must be divisible by {divisor} on every axis "
                             "for this architecture and depth")
    return resolved  # type: ignore[return-value]


def build_model(name: str, spec: Mapping[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    """Build the network of registry entry ``name`` (``spec`` = its validated ``models:`` mapping).

    Checks the patch against the architecture's depth and the relations
    between its sizes, raising :class:`BrainmetsError` naming the model and the
    problem. The module is returned in train mode on the CPU with fresh
    (seeded by the caller) weights.
    """
    arch_name = spec["arch"]
    arch = ARCHITECTURES[arch_name]
    if int(in_channels) < 1 or int(out_channels) < 1:
        raise BrainmetsError(f"model {name!r}: in/out channels must be >= 1, got {in_channels}/{out_channels}")
    patch = tuple(spec["patch"])
    divisor = arch.divisor(spec)
    if any(p % divisor for p in patch):
        raise BrainmetsError(
            f"model {name!r} (arch {arch_name}): patch {list(patch)} must be divisible by {divisor} "
            f"on every axis for this architecture and depth"
        )
    if arch.instance_norm_bottleneck and all(p // divisor < 2 for p in patch):
        # instance norm over a single voxel is undefined: torch refuses it in train mode
        raise BrainmetsError(
            f"model {name!r} (arch {arch_name}): patch {list(patch)} shrinks to one voxel at the coarsest level "
            f"(divisor {divisor}); instance normalisation cannot train on that. Use a patch of at least "
            f"{2 * divisor} on one axis or a shallower network"
        )
    return arch.builder(name, spec, int(in_channels), int(out_channels), patch)
