"""Model registry: a config entry (``models:`` section) -> a MONAI network.

Every entry names its architecture with ``arch``; the other keys size it, so one
code path builds the tiny CPU networks of the default config and the paper-size
networks (the defaults below are the paper's / MONAI's sizes). ``patch`` (the
training window, 3 ints) is part of every entry because several architectures
depend on it (UNETR's ``img_size``, SegResNetVAE's ``input_image_size``) and the
others constrain it (how many times it can be halved); it is validated here so a
bad patch fails when the model is built, not deep inside a forward pass.

All networks return raw logits (no final activation): ``out_channels`` sigmoid
channels for segmentation (WT, TC, ET), one logit for the detector.

Architectures (``arch`` values) and their keys:

``dynunet``
    MONAI DynUNet, the paper's 3D U-Net and two-stage segmentor. Keys:
    ``filters`` (default 32-64-128-256-320), ``residual`` (bool, residual
    blocks; default false), ``deep_supervision`` (number of extra heads,
    0 = off; the segmentor uses 2 = three heads in all), ``dropout``.
    Layout rule (nnU-Net style, isotropic): one level per filter entry, kernel 3
    at every level, stride 1 at the first level and 2 at every deeper level, so
    the patch must be divisible by ``2 ** (len(filters) - 1)``; the decoder
    upsamples with kernel = stride. ``kernel_size``/``strides`` override it.
``densenet121`` (alias ``densenet``)
    MONAI DenseNet (3D) patch classifier, the two-stage detector. Keys:
    ``init_features`` (64), ``growth_rate`` (32), ``block_config``
    ((6, 12, 24, 16) = DenseNet121), ``bn_size`` (4), ``dropout`` (0.2).
``unet`` / ``resunet``
    MONAI UNet with residual units (the "residual U-Net" baseline). Keys:
    ``channels`` (or ``filters``; default 16-32-64-128-256), ``num_res_units``
    (2), ``dropout``. Stride 2 between levels.
``attentionunet``
    MONAI AttentionUnet. Keys: ``channels``/``filters``, ``dropout``.
``basicunet``
    MONAI BasicUNet (plain 3D U-Net with 4 poolings). Keys: ``features``
    (6 ints), ``dropout``.
``vnet``
    MONAI VNet. Keys: ``dropout`` (0.5 by MONAI default, applied to the
    down/up paths). VNet's first block repeats the input ``16 // in_channels``
    times, so ``in_channels`` must divide 16; other counts (e.g. 3 sequences)
    get a learnable 1x1x1 convolution that maps them to the next divisor of 16
    (3 -> 4 channels) in front of the network (:class:`ChannelAdapter`).
    Patch divisible by 16.
``segresnet`` / ``segresnetvae``
    MONAI SegResNet(VAE). Keys: ``init_filters`` (8), ``num_groups`` (group
    norm groups, default ``min(8, init_filters)``), ``blocks_down``
    ((1, 2, 2, 4)), ``blocks_up`` ((1, 1, 1)), ``dropout``; VAE also ``vae_nz``
    (256). The VAE branch needs the exact input size: ``input_image_size`` =
    the patch. Patch divisible by ``2 ** (len(blocks_down) - 1)``.
``unetr``
    MONAI UNETR. ``img_size`` = the patch (UNETR accepts only that size).
    Keys: ``feature_size`` (16), ``hidden_size`` (768), ``mlp_dim`` (3072),
    ``num_heads`` (12), ``dropout``. Patch divisible by 16 (its token size).
``swinunetr`` / ``swinunetr_v2``
    MONAI SwinUNETR (``use_v2=True`` for v2, or key ``use_v2``). Keys:
    ``feature_size`` (24, a multiple of 12), ``depths`` ((2, 2, 2, 2)),
    ``num_heads`` ((3, 6, 12, 24)), ``window_size`` (7), ``dropout``.
    Every spatial size must be divisible by 32.

``resunet3d`` / ``resunetse3d``
    The authors' ResUNet and ResUNetSE: pytorch-3dunet's ``ResidualUNet3D`` /
    ``ResidualUNetSE3D`` rebuilt in :mod:`brainmets.models.residual_unet`. Keys:
    ``f_maps`` (int: width of the first level, doubled per level; or one int per
    level; default 64), ``num_levels`` (5; used when ``f_maps`` is an int),
    ``num_groups`` (group-norm groups, 8). Patch divisible by ``2 ** (levels - 1)``.
``nnformer``
    nnFormer, reconstructed in :mod:`brainmets.models.nnformer`. Keys:
    ``embed_dim`` (96), ``depths`` ((2, 2, 2, 2)), ``num_heads`` ((3, 6, 12, 24)),
    ``window_sizes`` ((4, 4, 8, 4)), ``embed_patch`` (4, or 3 ints), ``drop_path``
    (0.2). Patch divisible by ``embed_patch * 2 ** (len(depths) - 1)``; every
    stage's feature map divisible by its window (a window larger than the map
    shrinks to it).
``mlp_unext``
    MLP-UNEXT, reconstructed as a volumetric UNeXt in
    :mod:`brainmets.models.mlp_unext`. Keys: ``conv_channels`` ((16, 32, 128)),
    ``token_dims`` ((160, 256)). Patch divisible by
    ``2 ** (len(conv_channels) + len(token_dims))``.
``resenc_unet``
    nnU-Net's residual-encoder U-Net (the ResEnc presets' network), rebuilt in
    :mod:`brainmets.models.resenc_unet`. Keys: ``features``
    ((32, 64, 128, 256, 320, 320)), ``blocks`` (residual blocks per encoder stage,
    (1, 3, 4, 6, 6, 6)), ``decoder_convs`` (1). Patch divisible by
    ``2 ** (len(features) - 1)``.

Instance-normalised networks (dynunet, unet, basicunet, swinunetr, resenc_unet) must keep
more than one voxel at their coarsest level (torch cannot instance-normalise a
single voxel in train mode), so e.g. SwinUNETR needs a patch of 64 on one axis.

Keys ``arch``, ``patch``, ``task`` and ``description`` are accepted by every
entry; any other unknown key is an error (a typo would otherwise silently build
the default size).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from brainmets.errors import BrainmetsError
from brainmets.models.mlp_unext import CONV_CHANNELS, TOKEN_DIMS, MLPUNext
from brainmets.models.nnformer import DEPTHS as NNFORMER_DEPTHS
from brainmets.models.nnformer import EMBED_PATCH as NNFORMER_EMBED_PATCH
from brainmets.models.nnformer import NnFormer
from brainmets.models.resenc_unet import RESENC_FEATURES, ResEncUNet
from brainmets.models.residual_unet import ResidualUNet3D, features_per_level

#: Keys every registry entry may carry besides the architecture's own.
COMMON_KEYS = frozenset({"arch", "patch", "task", "description"})

#: The paper's U-Net / segmentor widths (nnU-Net defaults for 3D at 128^3).
PAPER_FILTERS = (32, 64, 128, 256, 320)


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
    keys: frozenset[str]
    #: patch must be divisible by this (per axis), given the spec
    divisor: Callable[[Mapping[str, Any]], int]
    #: whether channels_last_3d memory format suits it (convolutional networks)
    convolutional: bool = True
    #: instance-normalised at the coarsest level: training needs more than one voxel there
    instance_norm_bottleneck: bool = False


def _patch(name: str, spec: Mapping[str, Any]) -> tuple[int, int, int]:
    patch = spec.get("patch")
    if patch is None:
        raise BrainmetsError(f"model {name!r}: the registry entry has no 'patch' (3 ints, e.g. [64, 64, 64])")
    try:
        values = tuple(int(p) for p in patch)
    except (TypeError, ValueError):
        raise BrainmetsError(f"model {name!r}: patch must be 3 positive integers, got {patch!r}") from None
    if len(values) != 3 or min(values) <= 0 or any(float(p) != v for p, v in zip(patch, values)):
        raise BrainmetsError(f"model {name!r}: patch must be 3 positive integers, got {patch!r}")
    return values  # type: ignore[return-value]


def dynunet_layout(
    filters: Sequence[int], spec: Mapping[str, Any] | None = None
) -> tuple[list[int], list[int], list[int]]:
    """Kernel sizes, strides and upsampling kernels of a DynUNet with ``len(filters)`` levels.

    Rule: kernel 3 everywhere; stride 1 at the first level (full-resolution
    features), 2 at every deeper level; upsampling kernel = stride. For
    filters 32-64-128-256-320 at 128^3 this is the nnU-Net / paper network
    (bottleneck 8^3, 478 GMAC). ``spec['kernel_size']`` / ``spec['strides']``
    override the rule.
    """
    spec = spec or {}
    levels = len(filters)
    kernels = list(spec.get("kernel_size") or [3] * levels)
    strides = list(spec.get("strides") or [1] + [2] * (levels - 1))
    return kernels, strides, strides[1:]


def _stride_product(strides: Sequence[Any]) -> int:
    product = 1
    for s in strides:
        if isinstance(s, Sequence):
            raise BrainmetsError("anisotropic DynUNet strides are not supported by the patch check; use ints")
        product *= int(s)
    return product


def _build_dynunet(name, spec, cin, cout, patch):
    from monai.networks.nets import DynUNet

    filters = [int(f) for f in spec.get("filters", PAPER_FILTERS)]
    if len(filters) < 2:
        raise BrainmetsError(f"model {name!r}: dynunet needs at least 2 filter levels, got {filters}")
    kernels, strides, up = dynunet_layout(filters, spec)
    if not (len(kernels) == len(strides) == len(filters)):
        raise BrainmetsError(
            f"model {name!r}: kernel_size ({len(kernels)}), strides ({len(strides)}) and "
            f"filters ({len(filters)}) must have one entry per level"
        )
    heads = int(spec.get("deep_supervision", 0) or 0)
    if heads < 0 or (heads and heads > len(filters) - 2):
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
        dropout=spec.get("dropout"),
        norm_name=("INSTANCE", {"affine": True}),
        deep_supervision=heads > 0,
        deep_supr_num=max(heads, 1),
        res_block=bool(spec.get("residual", False)),
    )


def _dynunet_divisor(spec):
    filters = spec.get("filters", PAPER_FILTERS)
    _, strides, _ = dynunet_layout(filters, spec)
    return _stride_product(strides)


def _build_densenet(name, spec, cin, cout, patch):
    from monai.networks.nets import DenseNet

    return DenseNet(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        init_features=int(spec.get("init_features", 64)),
        growth_rate=int(spec.get("growth_rate", 32)),
        block_config=tuple(int(b) for b in spec.get("block_config", (6, 12, 24, 16))),
        bn_size=int(spec.get("bn_size", 4)),
        dropout_prob=float(spec.get("dropout", 0.2)),
    )


def _densenet_divisor(spec):
    # stem conv stride 2, max-pool stride 2, one stride-2 transition between blocks;
    # the final adaptive pool then needs at least one voxel per axis.
    return 2 ** (2 + len(spec.get("block_config", (6, 12, 24, 16))) - 1)


def _channels(spec, default):
    return [int(c) for c in spec.get("channels", spec.get("filters", default))]


def _build_unet(name, spec, cin, cout, patch):
    from monai.networks.nets import UNet

    channels = _channels(spec, (16, 32, 64, 128, 256))
    return UNet(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        channels=channels,
        strides=[2] * (len(channels) - 1),
        num_res_units=int(spec.get("num_res_units", 2)),
        norm="INSTANCE",
        dropout=float(spec.get("dropout", 0.0)),
    )


def _build_attentionunet(name, spec, cin, cout, patch):
    from monai.networks.nets import AttentionUnet

    channels = _channels(spec, (16, 32, 64, 128, 256))
    return AttentionUnet(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        channels=channels,
        strides=[2] * (len(channels) - 1),
        dropout=float(spec.get("dropout", 0.0)),
    )


def _levels_divisor(default):
    return lambda spec: 2 ** (len(_channels(spec, default)) - 1)


def _build_basicunet(name, spec, cin, cout, patch):
    from monai.networks.nets import BasicUNet

    features = [int(f) for f in spec.get("features", (32, 32, 64, 128, 256, 32))]
    if len(features) != 6:
        raise BrainmetsError(f"model {name!r}: basicunet 'features' needs 6 ints, got {features}")
    return BasicUNet(
        spatial_dims=3, in_channels=cin, out_channels=cout, features=features,
        dropout=float(spec.get("dropout", 0.0)),
    )


def _build_vnet(name, spec, cin, cout, patch):
    from monai.networks.nets import VNet

    dropout = float(spec.get("dropout", 0.5) or 0.0)

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
    init_filters = int(spec.get("init_filters", 8))
    # group norm: MONAI's default of 8 groups cannot split fewer than 8 filters
    groups = int(spec.get("num_groups", min(8, init_filters)))
    if groups < 1 or init_filters % groups:
        raise BrainmetsError(
            f"model {name!r}: SegResNet init_filters {init_filters} must be divisible by num_groups {groups}"
        )
    return {
        "init_filters": init_filters,
        "norm": ("GROUP", {"num_groups": groups}),
        "blocks_down": tuple(int(b) for b in spec.get("blocks_down", (1, 2, 2, 4))),
        "blocks_up": tuple(int(b) for b in spec.get("blocks_up", (1, 1, 1))),
        "dropout_prob": spec.get("dropout"),
    }


def _segresnet_divisor(spec):
    return 2 ** (len(spec.get("blocks_down", (1, 2, 2, 4))) - 1)


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
        vae_nz=int(spec.get("vae_nz", 256)),
        **_segresnet_kwargs(name, spec),
    )


def _build_unetr(name, spec, cin, cout, patch):
    from monai.networks.nets import UNETR

    hidden, heads = int(spec.get("hidden_size", 768)), int(spec.get("num_heads", 12))
    if hidden % heads:
        raise BrainmetsError(f"model {name!r}: UNETR hidden_size {hidden} must be divisible by num_heads {heads}")
    return UNETR(
        in_channels=cin,
        out_channels=cout,
        img_size=list(patch),
        feature_size=int(spec.get("feature_size", 16)),
        hidden_size=hidden,
        mlp_dim=int(spec.get("mlp_dim", 3072)),
        num_heads=heads,
        dropout_rate=float(spec.get("dropout", 0.0)),
        spatial_dims=3,
    )


def _build_swinunetr(name, spec, cin, cout, patch, use_v2=None):
    from monai.networks.nets import SwinUNETR

    feature_size = int(spec.get("feature_size", 24))
    if feature_size % 12:
        raise BrainmetsError(f"model {name!r}: SwinUNETR feature_size must be a multiple of 12, got {feature_size}")
    return SwinUNETR(
        in_channels=cin,
        out_channels=cout,
        feature_size=feature_size,
        depths=tuple(int(d) for d in spec.get("depths", (2, 2, 2, 2))),
        num_heads=tuple(int(h) for h in spec.get("num_heads", (3, 6, 12, 24))),
        window_size=spec.get("window_size", 7),
        drop_rate=float(spec.get("dropout", 0.0)),
        spatial_dims=3,
        use_v2=bool(spec.get("use_v2", False)) if use_v2 is None else use_v2,
    )


def _build_swinunetr_v2(name, spec, cin, cout, patch):
    return _build_swinunetr(name, spec, cin, cout, patch, use_v2=True)


def _own_network(name, build, **kwargs):
    """Build one of this package's networks; its ``ValueError`` becomes a registry error naming the model."""
    try:
        return build(**kwargs)
    except ValueError as error:
        raise BrainmetsError(f"model {name!r}: {error}") from None


def _present(spec, keys):
    """The entry's values for ``keys`` it sets; the network's signature holds the defaults."""
    return {key: spec[key] for key in keys if key in spec}


def _resunet_widths(spec):
    return features_per_level(spec.get("f_maps", 64), int(spec.get("num_levels", 5)))


def _build_resunet3d(name, spec, cin, cout, patch, squeeze_excitation=False):
    return _own_network(
        name, ResidualUNet3D, in_channels=cin, out_channels=cout, f_maps=_resunet_widths(spec),
        squeeze_excitation=squeeze_excitation, **_present(spec, {"num_groups"}),
    )  # fmt: skip


def _build_resunetse3d(name, spec, cin, cout, patch):
    return _build_resunet3d(name, spec, cin, cout, patch, squeeze_excitation=True)


def _build_nnformer(name, spec, cin, cout, patch):
    return _own_network(
        name, NnFormer, in_channels=cin, out_channels=cout, patch=patch, **_present(spec, _NNFORMER_KEYS)
    )


def _nnformer_divisor(spec):
    embed_patch = spec.get("embed_patch", NNFORMER_EMBED_PATCH)
    largest = max(embed_patch) if isinstance(embed_patch, Sequence) else embed_patch
    return int(largest) * 2 ** (len(spec.get("depths", NNFORMER_DEPTHS)) - 1)


def _build_mlp_unext(name, spec, cin, cout, patch):
    return _own_network(name, MLPUNext, in_channels=cin, out_channels=cout, **_present(spec, _MLP_UNEXT_KEYS))


def _build_resenc_unet(name, spec, cin, cout, patch):
    return _own_network(name, ResEncUNet, in_channels=cin, out_channels=cout, **_present(spec, _RESENC_KEYS))


_UNET_DEFAULT = (16, 32, 64, 128, 256)
_SEGRESNET_KEYS = frozenset({"init_filters", "num_groups", "blocks_down", "blocks_up", "dropout"})
_SWIN_KEYS = frozenset({"feature_size", "depths", "num_heads", "window_size", "dropout", "use_v2"})
_RESUNET3D_KEYS = frozenset({"f_maps", "num_levels", "num_groups"})
_NNFORMER_KEYS = frozenset({"embed_dim", "depths", "num_heads", "window_sizes", "embed_patch", "drop_path"})
_MLP_UNEXT_KEYS = frozenset({"conv_channels", "token_dims"})
_RESENC_KEYS = frozenset({"features", "blocks", "decoder_convs"})

ARCHITECTURES: dict[str, _Arch] = {
    "dynunet": _Arch(
        _build_dynunet,
        frozenset({"filters", "residual", "deep_supervision", "dropout", "kernel_size", "strides"}),
        _dynunet_divisor,
        instance_norm_bottleneck=True,
    ),
    "densenet121": _Arch(
        _build_densenet,
        frozenset({"init_features", "growth_rate", "block_config", "bn_size", "dropout"}),
        _densenet_divisor,
    ),
    "unet": _Arch(
        _build_unet,
        frozenset({"channels", "filters", "num_res_units", "dropout"}),
        _levels_divisor(_UNET_DEFAULT),
        instance_norm_bottleneck=True,
    ),
    "attentionunet": _Arch(
        _build_attentionunet, frozenset({"channels", "filters", "dropout"}), _levels_divisor(_UNET_DEFAULT)
    ),
    "basicunet": _Arch(
        _build_basicunet, frozenset({"features", "dropout"}), lambda spec: 16, instance_norm_bottleneck=True
    ),
    "vnet": _Arch(_build_vnet, frozenset({"dropout"}), lambda spec: 16),
    "segresnet": _Arch(_build_segresnet, _SEGRESNET_KEYS, _segresnet_divisor),
    "segresnetvae": _Arch(_build_segresnetvae, _SEGRESNET_KEYS | {"vae_nz"}, _segresnet_divisor),
    "unetr": _Arch(
        _build_unetr,
        frozenset({"feature_size", "hidden_size", "mlp_dim", "num_heads", "dropout"}),
        lambda spec: 16,
        convolutional=False,
    ),
    "swinunetr": _Arch(
        _build_swinunetr, _SWIN_KEYS, lambda spec: 32, convolutional=False, instance_norm_bottleneck=True
    ),
    "swinunetr_v2": _Arch(
        _build_swinunetr_v2, _SWIN_KEYS, lambda spec: 32, convolutional=False, instance_norm_bottleneck=True
    ),
    "resunet3d": _Arch(
        _build_resunet3d, _RESUNET3D_KEYS, lambda spec: 2 ** (len(_resunet_widths(spec)) - 1)
    ),
    "resunetse3d": _Arch(
        _build_resunetse3d, _RESUNET3D_KEYS, lambda spec: 2 ** (len(_resunet_widths(spec)) - 1)
    ),
    "nnformer": _Arch(_build_nnformer, _NNFORMER_KEYS, _nnformer_divisor, convolutional=False),
    "mlp_unext": _Arch(
        _build_mlp_unext,
        _MLP_UNEXT_KEYS,
        lambda spec: 2 ** (len(spec.get("conv_channels", CONV_CHANNELS)) + len(spec.get("token_dims", TOKEN_DIMS))),
    ),
    "resenc_unet": _Arch(
        _build_resenc_unet,
        _RESENC_KEYS,
        lambda spec: 2 ** (len(spec.get("features", RESENC_FEATURES)) - 1),
        instance_norm_bottleneck=True,
    ),
}
#: Other spellings accepted for ``arch``.
ALIASES = {"densenet": "densenet121", "resunet": "unet", "attention_unet": "attentionunet", "swinunetrv2": "swinunetr_v2"}


def resolve_arch(name: str, spec: Mapping[str, Any]) -> str:
    """The canonical architecture name of a registry entry, with a clear error when unknown."""
    if not isinstance(spec, Mapping):
        raise BrainmetsError(f"model {name!r}: registry entry must be a mapping, got {type(spec).__name__}")
    arch = spec.get("arch")
    if arch is None:
        raise BrainmetsError(f"model {name!r}: registry entry has no 'arch'; one of {', '.join(ARCHITECTURES)}")
    arch = ALIASES.get(str(arch).lower(), str(arch).lower())
    if arch not in ARCHITECTURES:
        raise BrainmetsError(
            f"model {name!r}: unknown arch {spec['arch']!r}; expected one of {', '.join(ARCHITECTURES)}"
        )
    return arch


def is_convolutional(spec: Mapping[str, Any]) -> bool:
    """Whether the entry is a convolutional network (channels_last_3d helps those on CPU)."""
    return ARCHITECTURES[resolve_arch("?", spec)].convolutional


def build_model(name: str, spec: Mapping[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    """Build the network of registry entry ``name`` (``spec`` = its ``models:`` mapping).

    Validates the keys and the patch against the architecture's constraints and
    raises :class:`BrainmetsError` naming the model and the problem. The module
    is returned in train mode on the CPU with fresh (seeded by the caller) weights.
    """
    arch_name = resolve_arch(name, spec)
    arch = ARCHITECTURES[arch_name]
    unknown = sorted(set(spec) - COMMON_KEYS - arch.keys)
    if unknown:
        raise BrainmetsError(
            f"model {name!r} (arch {arch_name}): unknown key(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(COMMON_KEYS | arch.keys))}"
        )
    if int(in_channels) < 1 or int(out_channels) < 1:
        raise BrainmetsError(f"model {name!r}: in/out channels must be >= 1, got {in_channels}/{out_channels}")
    patch = _patch(name, spec)
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
