"""Typed training settings built from the validated ``training`` section of the config.

Every key, its type, its allowed values and its default (the paper's value,
Sadegheih & Merhof 2024, following nnU-Net, unless noted) are written in the
config schema, ``properties.training`` of ``brainmets/schemas/config.schema.yaml``;
:func:`brainmets.config.load_config` checks a config against it and fills the
defaults, so an unknown key or a bad value fails before any job, naming the key.
The classes here only give the validated mapping types and names; they check
nothing again. In short:

``training.segmentation`` (the region-based segmentors: U-Nets, baselines, two-stage segmentor)
    iterations 250000, batch_patients 2 x crops_per_patient 5, pos_fraction 2/3,
    positive_centre lesion, positive_region wt, negative_centre brain, deep_supervision_decay 0.5
    (normalised), dice batch, grad_clip 12,
    SGD (lr 0.01, momentum 0.99, Nesterov, weight decay 3e-5), poly schedule (0.9);
    detector_threshold 0 and detector_draws 1 for train-on-detected.
``training.detection`` (the patch classifier of the two-stage model)
    iterations 40400 (400 epochs of 101 steps), 2 x 5 crops, pos_fraction 0.5,
    target any_tumour, negatives tumour_free, no clipping, Adam (lr 4e-4),
    linear warm-up over 1010 steps then cosine.
``training.augmentation``
    nnU-Net's augmentations and probabilities (rotation, scaling, noise,
    smoothing, intensity scaling, simulated low resolution, mirroring); the
    authors' extra gamma and fixed-mean contrast transforms are off by default,
    rotation and isotropic scaling are separate transforms (affine separate),
    and each crop is augmented alone (scope crop).
``training`` (top level)
    checkpoint_every, val_every, val_max_cases, keep_best,
    log_every, device, threads, channels_last, precision, precision_by_model, pos_fraction_by_model,
    prefetch.

An ``optimizer``/``schedule`` mapping with the task's default name (or none)
refines the task's defaults; another name starts from that optimiser's or
schedule's own defaults (the schema's ``if``/``then``), so SGD's momentum never
leaks into Adam. Fields an optimiser or schedule does not use are None.

The network comes from ``models.<name>`` (built by :func:`brainmets.models.build_model`):
its ``task`` (default detection for ``densenet121``, segmentation otherwise) and its
``patch`` (three ints) are keys of that validated entry.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from brainmets.errors import BrainmetsError

TASKS = ("segmentation", "detection")


@dataclass(frozen=True)
class OptimizerSettings:
    name: str
    lr: float
    weight_decay: float
    momentum: float | None = None  # sgd only
    nesterov: bool | None = None  # sgd only
    betas: tuple[float, float] | None = None  # adam, adamw

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "OptimizerSettings":
        values = dict(section)
        if values.get("betas") is not None:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


@dataclass(frozen=True)
class ScheduleSettings:
    name: str
    exponent: float | None = None  # poly
    warmup_iterations: int | None = None  # warmup_cosine
    warmup_start_lr: float | None = None  # warmup_cosine
    min_lr: float | None = None  # warmup_cosine


@dataclass(frozen=True)
class TaskSettings:
    """Sampling, optimiser and schedule of one task (segmentation or detection)."""

    task: str
    iterations: int
    batch_patients: int
    crops_per_patient: int
    pos_fraction: float
    positive_centre: str
    optimizer: OptimizerSettings
    schedule: ScheduleSettings
    grad_clip: float
    positive_region: str = "wt"
    # segmentation only (None for the detector)
    deep_supervision_decay: float | None = None
    deep_supervision_normalise: bool | None = None
    dice: str | None = None
    detector_threshold: float | None = None
    detector_draws: int | None = None
    negative_centre: str | None = None
    # detection only (None for the segmentors)
    target: str | None = None
    negatives: str | None = None

    @property
    def batch_size(self) -> int:
        return self.batch_patients * self.crops_per_patient

    @classmethod
    def from_section(cls, task: str, section: Mapping[str, Any]) -> "TaskSettings":
        values = dict(section)
        values["optimizer"] = OptimizerSettings.from_section(values["optimizer"])
        values["schedule"] = ScheduleSettings(**values["schedule"])
        return cls(task=task, **values)


@dataclass(frozen=True)
class AugmentationSettings:
    enabled: bool
    rotate_prob: float
    rotate_degrees: float
    scale_prob: float
    scale_range: tuple[float, float]
    noise_prob: float
    noise_std: float
    smooth_prob: float
    smooth_sigma: tuple[float, float]
    intensity_scale_prob: float
    intensity_scale_range: tuple[float, float]
    intensity_scale_channel_wise: bool
    fixed_mean_scale_prob: float
    gamma_prob: float
    gamma_inverted_prob: float
    gamma_range: tuple[float, float]
    low_resolution_prob: float
    low_resolution_zoom: tuple[float, float]
    mirror_prob: float
    affine: str = "separate"
    scope: str = "crop"

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "AugmentationSettings":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items()})


@dataclass(frozen=True)
class TrainingSettings:
    segmentation: TaskSettings
    detection: TaskSettings
    augmentation: AugmentationSettings
    checkpoint_every: int
    val_every: int
    val_max_cases: int | None
    keep_best: bool
    log_every: int
    device: str
    threads: int | None
    #: "auto", "true" or "false" (the config's auto | true | false)
    channels_last: str
    #: auto, native_bf16, bf16 or fp32 (brainmets.runtime)
    precision: str
    #: per registry name, the precision that replaces ``precision`` for that model
    precision_by_model: dict[str, str]
    #: per registry name, the pos_fraction that replaces its task's for that model
    pos_fraction_by_model: dict[str, float]
    prefetch: int

    def precision_of(self, model: str) -> str:
        """The training precision of registry entry ``model``."""
        return self.precision_by_model.get(model, self.precision)

    def task(self, name: str) -> TaskSettings:
        return self.segmentation if name == "segmentation" else self.detection

    def task_of(self, model: str, task: str) -> TaskSettings:
        """The ``task`` settings registry entry ``model`` trains with (its pos_fraction_by_model applied)."""
        ts = self.task(task)
        if model in self.pos_fraction_by_model:
            ts = dataclasses.replace(ts, pos_fraction=float(self.pos_fraction_by_model[model]))
        return ts

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-friendly dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "TrainingSettings":
        """Settings from a validated ``training`` section (:func:`brainmets.config.validate_section`)."""
        values = dict(section)
        values["segmentation"] = TaskSettings.from_section("segmentation", values["segmentation"])
        values["detection"] = TaskSettings.from_section("detection", values["detection"])
        values["augmentation"] = AugmentationSettings.from_section(values["augmentation"])
        values["channels_last"] = {True: "true", False: "false"}.get(values["channels_last"], values["channels_last"])
        return cls(**values)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def training_settings(config: Mapping[str, Any]) -> TrainingSettings:
    """:class:`TrainingSettings` of a validated config (:func:`brainmets.config.load_config`)."""
    return TrainingSettings.from_section(config["training"])


def model_task(name: str, spec: Mapping[str, Any]) -> str:
    """Task of validated registry entry ``name``: segmentation or detection."""
    return spec["task"]


def model_patch(name: str, spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """Training patch size of validated registry entry ``name``."""
    return tuple(spec["patch"])  # type: ignore[return-value]


def model_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A copy of ``models.<name>`` from a validated config, with a clear error when it is missing."""
    models = config["models"]
    if name not in models:
        raise BrainmetsError(
            f"model {name!r} is not in the config's models section; available: "
            f"{', '.join(sorted(models)) or '(none)'}"
        )
    return copy.deepcopy(dict(models[name]))
