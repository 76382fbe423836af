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

Devices. :mod:`brainmets.runtime` (shared with training) picks the device and
the autocast: CUDA when available with bf16, else CPU in plain fp32.
``channels_last_3d`` is used on CUDA for convolutional networks; on CPU it is
off by default because the measured gain for these networks was inconsistent
(see benchmarks/results/inference.md), and can be forced with the setting.

FLOPs. Per-window forward FLOPs of each network are counted once with
``torch.utils.flop_counter`` (:func:`brainmets.models.model_flops`) and
multiplied by the number of windows that network actually ran.
"""

from __future__ import annotations

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
from brainmets.models import build_model, forward_outputs, is_convolutional, load_trained, model_flops
from brainmets.runtime import Runtime

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class InferenceSettings:
    """The config's validated ``inference:`` section (keys, allowed values and defaults: the config schema)."""

    #: fraction of a window shared with its neighbour along an axis
    overlap: float
    #: the segmentor runs on windows whose detector logit is strictly above this
    detector_threshold: float
    #: windows per network call
    batch_size: int
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
    #: which weights the workflow predicts with: best (best.pt) or final (model.pt)
    checkpoint: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "InferenceSettings":
        """Settings of a validated config (:func:`brainmets.config.load_config`), or the defaults for ``None``."""
        from brainmets.config import validate_section

        return cls(**(config["inference"] if config is not None else validate_section("inference")))


# --------------------------------------------------------------------------- runtime


def inference_runtime(settings: InferenceSettings) -> Runtime:
    """The runtime of ``settings``: channels_last_3d ``auto`` = on CUDA only (see the module docstring)."""
    return Runtime.create(settings.device, settings.channels_last, auto_on_cpu=False, auto_on_cuda=True,
                          section="inference")


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
    patch: tuple[int, int, int]
    flops_per_window: float

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], in_channels: int) -> "ReferenceModel":
        model = build_model(name, spec, in_channels, len(TRAIN_REGIONS))
        patch = tuple(int(p) for p in spec["patch"])
        return cls(name, patch, model_flops(model, in_channels, patch))  # type: ignore[arg-type]


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


def predict_single_pass(
    network: Network, image: torch.Tensor, settings: InferenceSettings, runtime: Runtime
) -> CaseInference:
    """Sliding-window inference of one network over ``image`` (4 sequences, X, Y, Z)."""
    from monai.inferers import sliding_window_inference

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
            roi_size=network.patch,
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
    flops = network.flops_per_window * windows_run
    record = {
        "mode": "single_pass",
        "seconds": seconds,
        "windows_total": windows_run,
        "windows_kept": windows_run,
        "fraction_kept": 1.0,
        "flops": flops,
        "flops_single_pass": flops,
        "single_pass_model": network.name,
        "gmac_per_window": network.flops_per_window / 2e9,
    }
    return CaseInference(probabilities.float().cpu(), record)


# --------------------------------------------------------------------------- two stage


def predict_two_stage(
    detector: Network,
    segmentor: Network,
    image: torch.Tensor,
    settings: InferenceSettings,
    runtime: Runtime,
    reference: ReferenceModel | None = None,
) -> CaseInference:
    """Detector-gated sliding window over ``image`` (4 sequences, X, Y, Z).

    Windows of the segmentor's patch tile the volume with ``settings.overlap``
    (the volume is zero-padded at its far end where it is smaller than a window;
    zero is the cache's background value). The detector scores every window in
    batches; the segmentor runs, in batches, only on windows whose logit is
    above ``settings.detector_threshold``; their outputs are blended
    (see the module docstring) and voxels no kept window covers are 0.

    ``flops_single_pass`` is what ``reference`` (the configured single-pass
    model, run with MONAI's sliding window at its own patch) would spend on the
    same volume; without a reference it is the segmentor run on every window.
    """
    if tuple(detector.patch) != tuple(segmentor.patch):
        raise BrainmetsError(
            f"detector patch {list(detector.patch)} differs from segmentor patch {list(segmentor.patch)}; "
            "the two-stage model scores and segments the same windows"
        )
    patch = segmentor.patch
    shape = tuple(image.shape[1:])
    full = padded_shape(shape, patch)
    pad = [0, 0] * 3
    for axis, (n, m) in enumerate(zip(shape, full)):
        pad[2 * (2 - axis) + 1] = m - n  # F.pad lists the last axis first
    start = time.perf_counter()
    volume = F.pad(image.to(runtime.device), pad) if any(pad) else image.to(runtime.device)
    det_input, seg_input = volume[detector.channels], volume[segmentor.channels]
    corners = window_starts(full, patch, float(settings.overlap))
    batch_size = int(settings.batch_size)

    def windows(source: torch.Tensor, chosen: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        return torch.stack([source[:, x : x + patch[0], y : y + patch[1], z : z + patch[2]] for x, y, z in chosen])

    with torch.inference_mode():
        logits = []
        for i in range(0, len(corners), batch_size):
            logits.append(detector(windows(det_input, corners[i : i + batch_size]), runtime).reshape(-1))
        logits = torch.cat(logits).cpu() if logits else torch.empty(0)
        kept = [c for c, logit in zip(corners, logits.tolist()) if logit > settings.detector_threshold]

        weights = _weight_map(patch, settings.blend, runtime.device)
        total = torch.zeros((len(TRAIN_REGIONS), *full), device=runtime.device)
        norm = torch.zeros(full, device=runtime.device)
        for i in range(0, len(kept), batch_size):
            chunk = kept[i : i + batch_size]
            outputs = segmentor(windows(seg_input, chunk), runtime)
            if settings.average != "logits":
                outputs = torch.sigmoid(outputs)
            for (x, y, z), window in zip(chunk, outputs):
                region = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
                total[(slice(None), *region)] += window * weights
                norm[region] += weights
        covered = norm > 0
        total[:, covered] /= norm[covered]
        if settings.average == "logits":
            total[:, covered] = torch.sigmoid(total[:, covered])
        result = total[:, : shape[0], : shape[1], : shape[2]].float().cpu()
    runtime.synchronize()
    seconds = time.perf_counter() - start

    n_total, n_kept = len(corners), len(kept)
    flops_detector = detector.flops_per_window * n_total
    flops_segmentor = segmentor.flops_per_window * n_kept
    flops_dense = segmentor.flops_per_window * n_total
    if reference is not None:
        n_reference = sliding_window_count(shape, reference.patch, float(settings.overlap))
        flops_single_pass, single_pass_model = reference.flops_per_window * n_reference, reference.name
    else:
        n_reference, flops_single_pass, single_pass_model = n_total, flops_dense, f"{segmentor.name} (all windows)"
    record = {
        "mode": "two_stage",
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
        "voxels_covered_fraction": float(covered[: shape[0], : shape[1], : shape[2]].float().mean()),
    }
    return CaseInference(result, record)
