"""Network inference on one preprocessed volume: single-pass sliding window and the two-stage model.

Both paths return WT/TC/ET probabilities on the cache grid plus a record of
the work done (windows, FLOPs, seconds), so that the caller can write labels
and the ``inference/<split>.tsv`` table.

Blending. Window outputs are combined where windows overlap as a weighted
mean ``sum(w * o) / sum(w)`` over the windows that ran, of their sigmoid
probabilities (``average="probabilities"``, default) or of their logits, the
sigmoid taken after the mean (``average="logits"``, the authors' code; a
confident window then outweighs an unsure one more than in probability space).
``blend="constant"`` (default) uses ``w = 1``, the plain average the paper
describes for the two-stage model; ``blend="gaussian"`` weights each window's
centre more (MONAI's importance map, sigma 0.125 of the window), which damps
border artefacts. The same setting applies to both paths so that they differ
only in which windows run. In the two-stage path voxels that no kept window
covers get probability 0 (background).

Two-stage grid and batches. ``two_stage_mode="paper"`` scores every window of
the segmentor's patch grid at ``overlap`` (the paper); ``"fast"`` (beyond the
paper) lays the windows side by side, so both networks see each voxel about
once. The detector, which scores every window, runs in batches of
``detector_batch_size`` (a small network gains most from large batches), the
segmentor in batches of ``batch_size``; neither changes the result beyond
float rounding (eval mode: no batch statistics), which
``tests/inference/test_two_stage_reference.py`` checks against a window-by-window
reference.

Devices. :mod:`brainmets.runtime` (shared with training) picks the device and
the precision (``inference.precision``: ``auto`` = bf16 autocast on CUDA, plain
fp32 on the CPU; ``native_bf16`` also bf16 on a CPU with bf16 instructions).
``channels_last_3d`` is used on CUDA for convolutional networks; on CPU it is
off by default: with the default study's trained networks it made the
two-stage model slower and the single-pass U-Net no faster beyond noise
(benchmarks/results/inference.md); the setting forces it.

Window. The single-pass path slides the network's training patch
(``inference.window: null``, the paper) or, for networks that take any input
size, a larger window (:func:`brainmets.models.inference_window`): more context
and fewer window borders, and the instance normalisation of a window sees more
of the volume, so the outputs change. Measured with the default study's trained
networks (benchmarks/results/inference_settings.md): twice the patch raised
val Dice by 6-12 points at about the same FLOPs, run 1.3-1.8x slower on one
CPU thread (larger feature maps). The two-stage path always uses the patch grid:
the detector decides window by window.

FLOPs. Per-window forward FLOPs of each network are counted once with
``torch.utils.flop_counter`` (:func:`brainmets.models.model_flops`) and
multiplied by the number of windows that network actually ran; a single-pass
window larger than the patch counts the patch's FLOPs times the voxel ratio
(:func:`window_flops`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brainmets.constants import TRAIN_REGIONS, subset_channels
from brainmets.errors import BrainmetsError
from brainmets.inference.windows import padded_shape, sliding_window_count, window_starts
from brainmets.models import (
    build_model,
    forward_outputs,
    inference_window,
    is_convolutional,
    load_trained,
    model_flops,
)
from brainmets.runtime import Runtime

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class InferenceSettings:
    """The config's validated ``inference:`` section (keys, allowed values and defaults: the config schema)."""

    #: fraction of a window shared with its neighbour along an axis
    overlap: float
    #: single-pass window: None (the network's patch), k (k times the patch) or 3 voxel counts
    window: int | list[int] | None
    #: the segmentor runs on windows whose detector logit is strictly above this
    detector_threshold: float
    #: windows per network call (single-pass network, two-stage segmentor)
    batch_size: int
    #: windows per detector call
    detector_batch_size: int
    #: two-stage window grid: paper (overlap as set) or fast (side by side; beyond the paper)
    two_stage_mode: str
    #: weighting of overlapping window outputs: constant (plain mean) or gaussian
    blend: str
    #: what overlapping windows average: probabilities or logits (sigmoid after the mean)
    average: str
    #: region channels -> labels: nested or union (brainmets.inference.labels)
    label_export: str
    #: sigmoid probability above which a region is present
    threshold: float
    #: auto (CUDA if available), cpu, cuda, cuda:1, ...
    device: str
    #: channels_last_3d for convolutional networks: auto (CUDA only), true, false
    channels_last: str | bool
    #: auto, native_bf16, bf16 or fp32 (brainmets.runtime)
    precision: str
    #: which weights the workflow predicts with: best (best.pt) or final (model.pt)
    checkpoint: str
    #: spatial axes (0 x, 1 y, 2 z) test-time mirroring flips, every combination of them
    mirror_axes: list[int] = field(default_factory=lambda: [0, 1, 2])

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "InferenceSettings":
        """Settings of a validated config (:func:`brainmets.config.load_config`), or the defaults for ``None``."""
        from brainmets.config import validate_section

        return cls(**(config["inference"] if config is not None else validate_section("inference")))


# --------------------------------------------------------------------------- runtime


def inference_runtime(settings: InferenceSettings) -> Runtime:
    """The runtime of ``settings``: channels_last_3d ``auto`` = on CUDA only (see the module docstring)."""
    return Runtime.create(settings.device, settings.channels_last, auto_on_cpu=False, auto_on_cuda=True,
                          section="inference", precision=settings.precision)


@dataclass
class Network:
    """A network ready for inference, with what inference needs to know about it."""

    model: nn.Module
    info: dict[str, Any]
    #: cache channels (indices into the 4 sequences) the network reads, from its subset
    channels: list[int]
    patch: tuple[int, int, int]
    #: forward FLOPs of one window, batch 1
    flops_per_window: float
    #: memory format of its inputs
    memory_format: torch.memory_format = torch.contiguous_format
    name: str = ""

    def __call__(self, batch: torch.Tensor, runtime: Runtime) -> torch.Tensor:
        """Main-head logits of a batch of windows, as float32."""
        with runtime.autocast():
            main, _, _ = forward_outputs(self.model, batch.contiguous(memory_format=self.memory_format))
        return main.float()


def prepare_network(
    model: nn.Module, info: Mapping[str, Any], runtime: Runtime, name: str = ""
) -> Network:
    """Wrap a model and its ``info`` (as saved with it) for inference on ``runtime``."""
    subset = str(info.get("subset", ""))
    try:
        channels = subset_channels(subset)
    except BrainmetsError as exc:
        raise BrainmetsError(f"model {name or info.get('model_name')}: subset {subset!r} in its info: {exc}") from exc
    if len(channels) != int(info["in_channels"]):
        raise BrainmetsError(
            f"model {name or info.get('model_name')}: subset {subset} has {len(channels)} sequences "
            f"but the network takes {info['in_channels']} input channels"
        )
    patch = tuple(int(p) for p in info["patch"])
    flops = model_flops(model, len(channels), patch)
    memory_format = torch.contiguous_format
    model = model.to(runtime.device).eval()
    spec = info.get("spec") or {}
    if runtime.channels_last and "arch" in spec and is_convolutional(spec):
        model = model.to(memory_format=torch.channels_last_3d)
        memory_format = torch.channels_last_3d
    return Network(model, dict(info), channels, patch, flops, memory_format, name or str(info.get("model_name", "")))


def load_network(path: str | Path, runtime: Runtime, task: str) -> Network:
    """Load a ``model.pt`` and check it is a ``task`` (segmentation|detection) network."""
    model, info = load_trained(path, "cpu")
    if info.get("task") != task:
        raise BrainmetsError(f"{path} holds a {info.get('task')} model ({info.get('model_name')}); expected {task}")
    if task == "segmentation" and int(info["out_channels"]) != len(TRAIN_REGIONS):
        raise BrainmetsError(
            f"{path}: segmentation model has {info['out_channels']} outputs; expected {len(TRAIN_REGIONS)} "
            f"({', '.join(TRAIN_REGIONS)})"
        )
    if task == "detection" and int(info["out_channels"]) != 1:
        raise BrainmetsError(f"{path}: detector has {info['out_channels']} outputs; expected 1 logit")
    return prepare_network(model, info, runtime)


@dataclass(frozen=True)
class ReferenceModel:
    """The single-pass model a two-stage case is compared with (FLOPs only; it is never run)."""

    name: str
    #: the window it slides (its patch unless ``inference.window`` says otherwise)
    window: tuple[int, int, int]
    flops_per_window: float

    @classmethod
    def from_spec(
        cls, name: str, spec: Mapping[str, Any], in_channels: int, window: int | Sequence[int] | None = None
    ) -> "ReferenceModel":
        model = build_model(name, spec, in_channels, len(TRAIN_REGIONS))
        patch = tuple(int(p) for p in spec["patch"])
        size = inference_window(name, spec, window)
        return cls(name, size, window_flops(model_flops(model, in_channels, patch), patch, size))


def window_flops(flops_per_patch: float, patch: Sequence[int], window: Sequence[int]) -> float:
    """Forward FLOPs of a ``window`` from those of a ``patch``.

    Only networks that take any input size run other windows, and their
    convolutions (and the counted FLOPs) scale with the voxels of the window,
    every level's grid shrinking by the same factors.
    """
    return flops_per_patch * math.prod(window) / math.prod(patch)


# --------------------------------------------------------------------------- results


@dataclass
class CaseInference:
    """Probabilities on the cache grid and the work spent on them."""

    probabilities: torch.Tensor  # (3, X, Y, Z) float32 on the CPU
    record: dict[str, Any] = field(default_factory=dict)


def _weight_map(patch: Sequence[int], blend: str, device: torch.device) -> torch.Tensor:
    if blend == "constant":
        return torch.ones(tuple(patch), device=device)
    from monai.data.utils import compute_importance_map

    return compute_importance_map(tuple(patch), mode="gaussian", sigma_scale=0.125, device=device).float()


# --------------------------------------------------------------------------- single pass


def single_pass_window(network: Network, settings: InferenceSettings) -> tuple[int, int, int]:
    """The window ``network`` slides over a volume: its patch, or ``settings.window`` (module docstring: Window)."""
    if settings.window is None:
        return network.patch
    spec = network.info.get("spec")
    if not spec:
        raise BrainmetsError(f"model {network.name}: inference.window {settings.window!r} needs the model's "
                             "registry entry (spec) in its info to check the window against its architecture")
    return inference_window(network.name, spec, settings.window)


def predict_single_pass(
    network: Network, image: torch.Tensor, settings: InferenceSettings, runtime: Runtime
) -> CaseInference:
    """Sliding-window inference of one network over ``image`` (4 sequences, X, Y, Z)."""
    from monai.inferers import sliding_window_inference

    window = single_pass_window(network, settings)
    windows_run = 0

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        nonlocal windows_run
        windows_run += batch.shape[0]
        outputs = network(batch, runtime)
        return outputs if settings.average == "logits" else torch.sigmoid(outputs)

    inputs = image[network.channels].unsqueeze(0).to(runtime.device)
    start = time.perf_counter()
    with torch.inference_mode():
        probabilities = sliding_window_inference(
            inputs,
            roi_size=window,
            sw_batch_size=int(settings.batch_size),
            predictor=predictor,
            overlap=float(settings.overlap),
            mode=settings.blend,
            sigma_scale=0.125,
            padding_mode="constant",
            cval=0.0,
        )[0]
        if settings.average == "logits":
            probabilities = torch.sigmoid(probabilities)
    runtime.synchronize()
    seconds = time.perf_counter() - start
    flops_per_window = window_flops(network.flops_per_window, network.patch, window)
    flops = flops_per_window * windows_run
    record = {
        "mode": "single_pass",
        "seconds": seconds,
        "windows_total": windows_run,
        "windows_kept": windows_run,
        "fraction_kept": 1.0,
        "flops": flops,
        "flops_single_pass": flops,
        "single_pass_model": network.name,
        "gmac_per_window": flops_per_window / 2e9,
    }
    return CaseInference(probabilities.float().cpu(), record)


# --------------------------------------------------------------------------- two stage


def _padded(image: torch.Tensor, full: Sequence[int]) -> torch.Tensor:
    """``image`` (C, X, Y, Z) zero-padded at the far end of each axis to ``full``."""
    pad = []
    for have, want in reversed(list(zip(image.shape[1:], full))):
        pad += [0, int(want) - int(have)]  # F.pad lists the last axis first
    return F.pad(image, pad) if any(pad) else image


class _WindowReader:
    """Cuts batches of windows out of the padded volume, already in each network's memory format.

    The channels a network reads are copied once per case into the layout of
    its inputs, channels last ``(X, Y, Z, C)`` for a channels_last_3d network,
    so a stack of windows needs no second conversion copy; the detector and
    the segmentor share the copy when they read the same channels.
    """

    def __init__(self, volume: torch.Tensor):
        self.volume = volume
        self._sources: dict[tuple[tuple[int, ...], bool], torch.Tensor] = {}

    def __call__(self, network: Network, corners: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        channels_last = network.memory_format == torch.channels_last_3d
        key = (tuple(network.channels), channels_last)
        if key not in self._sources:
            source = self.volume[list(network.channels)]
            self._sources[key] = source.permute(1, 2, 3, 0).contiguous() if channels_last else source.contiguous()
        source, (px, py, pz) = self._sources[key], network.patch
        if channels_last:
            return torch.stack([source[x : x + px, y : y + py, z : z + pz] for x, y, z in corners]).permute(0, 4, 1, 2, 3)
        return torch.stack([source[:, x : x + px, y : y + py, z : z + pz] for x, y, z in corners])


class _Stitcher:
    """Blends segmentor windows into the padded volume (module docstring: Blending)."""

    def __init__(self, full: Sequence[int], patch: Sequence[int], settings: InferenceSettings, device: torch.device):
        self.patch = tuple(patch)
        self.logits = settings.average == "logits"
        self.weights = None if settings.blend == "constant" else _weight_map(patch, settings.blend, device)
        self.total = torch.zeros((len(TRAIN_REGIONS), *full), device=device)
        self.norm = torch.zeros(tuple(full), device=device)

    def add(self, corners: Sequence[tuple[int, int, int]], outputs: torch.Tensor) -> None:
        """Add a batch of window logits ``(B, 3, *patch)``."""
        if not self.logits:
            outputs = torch.sigmoid(outputs)
        if self.weights is not None:
            outputs = outputs * self.weights
        weight = 1.0 if self.weights is None else self.weights
        px, py, pz = self.patch
        # window by window: windows of a batch may overlap, so one vectorised add would be an index_add
        # over every voxel, measured slower than these two slice adds (CPU, 1 thread: 8 windows of 16^3
        # 0.30 against 0.24 ms, 4 of 64^3 24 against 3.6 ms)
        for (x, y, z), window in zip(corners, outputs):
            self.total[:, x : x + px, y : y + py, z : z + pz] += window
            self.norm[x : x + px, y : y + py, z : z + pz] += weight

    def probabilities(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(WT/TC/ET probabilities cropped to ``shape``, the mask of voxels some window covered)."""
        covered = self.norm > 0
        # uncovered voxels hold total 0 and stay 0; covered ones get the weighted mean
        mean = self.total.div_(self.norm.clamp_min(torch.finfo(self.norm.dtype).tiny))
        if self.logits:
            mean = mean.sigmoid_().mul_(covered)
        crop = (slice(None), *(slice(0, int(n)) for n in shape))
        return mean[crop], covered[crop[1:]]


def predict_two_stage(
    detector: Network,
    segmentor: Network,
    image: torch.Tensor,
    settings: InferenceSettings,
    runtime: Runtime,
    reference: ReferenceModel | None = None,
) -> CaseInference:
    """Detector-gated sliding window over ``image`` (4 sequences, X, Y, Z).

    Windows of the segmentor's patch tile the volume (zero-padded at its far
    end where it is smaller than a window; zero is the cache's background
    value). The detector scores every window in batches of
    ``settings.detector_batch_size``; the segmentor runs, in batches of
    ``settings.batch_size``, only on windows whose logit is above
    ``settings.detector_threshold``; their outputs are blended (see the module
    docstring) and voxels no kept window covers are 0.

    The grid: ``settings.two_stage_mode`` ``paper`` overlaps the windows by
    ``settings.overlap`` (the paper); ``fast`` lays them side by side (overlap
    0, the last window of an axis flush with its end), so both networks see
    each voxel about once (see the config schema).

    ``flops_single_pass`` is what ``reference`` (the configured single-pass
    model, run with MONAI's sliding window at its window, :func:`single_pass_window`, and
    ``settings.overlap``) would spend on the same volume; without a reference
    it is the segmentor run on every window of the grid.
    """
    if tuple(detector.patch) != tuple(segmentor.patch):
        raise BrainmetsError(
            f"detector patch {list(detector.patch)} differs from segmentor patch {list(segmentor.patch)}; "
            "the two-stage model scores and segments the same windows"
        )
    patch = segmentor.patch
    shape = tuple(image.shape[1:])
    full = padded_shape(shape, patch)
    fast = settings.two_stage_mode == "fast"
    start = time.perf_counter()
    windows = _WindowReader(_padded(image.to(runtime.device), full))
    corners = window_starts(full, patch, 0.0 if fast else float(settings.overlap))
    detector_batch, batch_size = int(settings.detector_batch_size), int(settings.batch_size)

    with torch.inference_mode():
        logits = [
            detector(windows(detector, corners[i : i + detector_batch]), runtime).reshape(-1)
            for i in range(0, len(corners), detector_batch)
        ]
        logits = torch.cat(logits).cpu() if logits else torch.empty(0)
        kept = [c for c, logit in zip(corners, logits.tolist()) if logit > settings.detector_threshold]

        stitcher = _Stitcher(full, patch, settings, runtime.device)
        for i in range(0, len(kept), batch_size):
            chunk = kept[i : i + batch_size]
            stitcher.add(chunk, segmentor(windows(segmentor, chunk), runtime))
        probabilities, covered = stitcher.probabilities(shape)
        result = probabilities.float().cpu()
    runtime.synchronize()
    seconds = time.perf_counter() - start

    n_total, n_kept = len(corners), len(kept)
    flops_detector = detector.flops_per_window * n_total
    flops_segmentor = segmentor.flops_per_window * n_kept
    flops_dense = segmentor.flops_per_window * n_total
    if reference is not None:
        n_reference = sliding_window_count(shape, reference.window, float(settings.overlap))
        flops_single_pass, single_pass_model = reference.flops_per_window * n_reference, reference.name
    else:
        n_reference, flops_single_pass, single_pass_model = n_total, flops_dense, f"{segmentor.name} (all windows)"
    record = {
        "mode": "two_stage_fast" if fast else "two_stage",
        "seconds": seconds,
        "windows_total": n_total,
        "windows_kept": n_kept,
        "fraction_kept": n_kept / n_total if n_total else 0.0,
        "flops": flops_detector + flops_segmentor,
        "flops_single_pass": flops_single_pass,
        "single_pass_model": single_pass_model,
        "single_pass_windows": n_reference,
        "flops_detector": flops_detector,
        "flops_segmentor": flops_segmentor,
        "flops_segmentor_all_windows": flops_dense,
        "detector_logit_max": float(logits.max()) if n_total else float("nan"),
        "voxels_covered_fraction": float(covered.float().mean()),
    }
    return CaseInference(result, record)
