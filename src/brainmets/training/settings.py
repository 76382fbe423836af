"""Typed training settings built from the ``training`` section of config.yaml.

Every key below is optional; a missing key takes the default shown, which is
the paper's value (Sadegheih & Merhof 2024, following nnU-Net) unless noted.
An unknown key is an error that names it, so a typo never silently falls back
to a default.

``training.segmentation`` (the region-based segmentors: U-Nets, baselines, two-stage segmentor)
    iterations          int    250000  optimiser steps (the budget; paper: 250,000)
    batch_patients      int    2       patients drawn per step
    crops_per_patient   int    5       random crops per patient (batch = 2 x 5 = 10 patches)
    pos_fraction        float  0.6667  fraction of the batch's crops centred on tumour (pos:neg 2:1);
                                       rounded to a whole number of crops per step
    positive_centre     str    lesion  how a positive centre is drawn: ``lesion`` = a lesion (26-connected
                                       component of WT) uniformly, then one of its voxels, so small
                                       metastases are seen as often as large ones; ``voxel`` = any
                                       tumour voxel uniformly (large lesions dominate)
    deep_supervision_decay float 0.5   weight of output head i is decay**i, normalised to sum 1
    grad_clip           float  12.0    clip the gradient's global norm to this (nnU-Net's value; keeps
                                       SGD with momentum 0.99 stable); 0 = no clipping
    optimizer           mapping        ``{name: sgd, lr: 0.01, momentum: 0.99, nesterov: true,
                                       weight_decay: 3.0e-5}``
    schedule            mapping        ``{name: poly, exponent: 0.9}``: lr = lr0 * (1 - t/T)**0.9
    detector_threshold  float  0.0     train-on-detected only: a crop is kept when the detector's
                                       logit exceeds this (paper: 0)
    detector_draws      int    4       train-on-detected only: candidate crops scored per batch slot;
                                       the first accepted one is used, else the best-scored one.
                                       Bounds the detector's work to draws x batch patches a step.

``training.detection`` (the patch classifier of the two-stage model)
    iterations          int    40400   optimiser steps (paper: 400 epochs; 202 patients / 2 per batch
                                       = 101 steps an epoch)
    batch_patients      int    2
    crops_per_patient   int    5
    pos_fraction        float  0.5     pos:neg 1:1; negatives avoid tumour where the case allows
    positive_centre     str    lesion  as above
    grad_clip           float  0.0     no clipping (the paper's detector recipe has none)
    optimizer           mapping        ``{name: adam, lr: 4.0e-4, betas: [0.9, 0.999], weight_decay: 0.0}``
    schedule            mapping        ``{name: warmup_cosine, warmup_iterations: 1010, warmup_start_lr: 1.0e-6,
                                       min_lr: 0.0}``: linear warm-up from warmup_start_lr to lr over
                                       warmup_iterations (paper: 10 epochs), then cosine annealing to min_lr

``optimizer`` keys: ``name`` (sgd|adam|adamw), ``lr``, ``momentum`` and ``nesterov`` (sgd),
``betas`` (adam/adamw), ``weight_decay``. ``schedule`` keys: ``name`` (poly|warmup_cosine|constant),
``exponent`` (poly), ``warmup_iterations``, ``warmup_start_lr``, ``min_lr`` (warmup_cosine).
A task's ``optimizer``/``schedule`` mapping given in the config is merged over that task's defaults.

``training.augmentation`` (MONAI dictionary transforms on each patch; nnU-Net's probabilities)
    enabled             bool   true
    rotate_prob         float  0.2     rotation about all three axes ...
    rotate_degrees      float  30      ... by up to +/- this many degrees
    scale_prob          float  0.2     isotropic scaling ...
    scale_range         [lo, hi] [0.7, 1.4]  ... by a factor in this range
    noise_prob          float  0.1     additive Gaussian noise ...
    noise_std           float  0.1     ... with standard deviation up to this (z-scored intensities)
    smooth_prob         float  0.2     Gaussian smoothing ...
    smooth_sigma        [lo, hi] [0.5, 1.0]  ... sigma in voxels
    intensity_scale_prob float 0.15    multiplicative intensity scaling ...
    intensity_scale_range [lo, hi] [0.75, 1.25]
    low_resolution_prob float  0.25    simulated low resolution (down- then up-sampling) ...
    low_resolution_zoom [lo, hi] [0.5, 1.0]  ... to this fraction of the resolution
    mirror_prob         float  0.5     mirroring, independently along each axis

``training`` (top level)
    checkpoint_every    int    1000    write checkpoint.pt every this many steps (and at the end)
    val_every           int    1000    validate every this many steps (and at the end); 0 = never
    val_crops_per_case  int    4       validation patches per validation case (fixed for the run,
                                       drawn once with the same pos:neg ratio as training)
    val_max_cases       int|null null  use at most this many validation cases (null = all)
    keep_best           bool   true    also keep best.pt (best validation score)
    log_every           int    50      one history.tsv row (mean loss of the window) every this many steps
    device              str    auto    auto (cuda when available) | cpu | cuda | cuda:N
    threads             int|null null  torch intra-op threads (null = torch's default)
    channels_last       str    auto    auto | true | false: channels_last_3d memory format (auto: on for
                                       convolutional networks; the DynUNet training step measured 1.7-2x
                                       faster with it on CPU, see benchmarks/results/training.md)
    prefetch            int    2       batches prepared ahead by a background thread (0 = inline)

The network comes from ``models.<name>`` (built by :func:`brainmets.models.build_model`).
Its task is ``spec["task"]`` when given, else ``detection`` for a DenseNet (``arch``
starting with ``densenet``) and ``segmentation`` for everything else. Its patch size is
``spec["patch"]`` (three ints).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from brainmets.errors import BrainmetsError

TASKS = ("segmentation", "detection")


@dataclass(frozen=True)
class OptimizerSettings:
    name: str
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ScheduleSettings:
    name: str
    exponent: float = 0.9
    warmup_iterations: int = 0
    warmup_start_lr: float = 1e-6
    min_lr: float = 0.0


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
    deep_supervision_decay: float = 0.5
    grad_clip: float = 0.0
    detector_threshold: float = 0.0
    detector_draws: int = 4

    @property
    def batch_size(self) -> int:
        return self.batch_patients * self.crops_per_patient


@dataclass(frozen=True)
class AugmentationSettings:
    enabled: bool = True
    rotate_prob: float = 0.2
    rotate_degrees: float = 30.0
    scale_prob: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_prob: float = 0.1
    noise_std: float = 0.1
    smooth_prob: float = 0.2
    smooth_sigma: tuple[float, float] = (0.5, 1.0)
    intensity_scale_prob: float = 0.15
    intensity_scale_range: tuple[float, float] = (0.75, 1.25)
    low_resolution_prob: float = 0.25
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    mirror_prob: float = 0.5


@dataclass(frozen=True)
class TrainingSettings:
    segmentation: TaskSettings
    detection: TaskSettings
    augmentation: AugmentationSettings = field(default_factory=AugmentationSettings)
    checkpoint_every: int = 1000
    val_every: int = 1000
    val_crops_per_case: int = 4
    val_max_cases: int | None = None
    keep_best: bool = True
    log_every: int = 50
    device: str = "auto"
    threads: int | None = None
    channels_last: str = "auto"
    prefetch: int = 2

    def task(self, name: str) -> TaskSettings:
        return self.segmentation if name == "segmentation" else self.detection

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-friendly dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "segmentation": {
        "iterations": 250_000,
        "batch_patients": 2,
        "crops_per_patient": 5,
        "pos_fraction": 2 / 3,
        "positive_centre": "lesion",
        "deep_supervision_decay": 0.5,
        "grad_clip": 12.0,
        "detector_threshold": 0.0,
        "detector_draws": 4,
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5},
        "schedule": {"name": "poly", "exponent": 0.9},
    },
    "detection": {
        "iterations": 40_400,
        "batch_patients": 2,
        "crops_per_patient": 5,
        "pos_fraction": 0.5,
        "positive_centre": "lesion",
        "grad_clip": 0.0,
        "optimizer": {"name": "adam", "lr": 4e-4, "betas": [0.9, 0.999], "weight_decay": 0.0},
        "schedule": {"name": "warmup_cosine", "warmup_iterations": 1010, "warmup_start_lr": 1e-6, "min_lr": 0.0},
    },
}

_OPTIMIZERS = ("sgd", "adam", "adamw")
_SCHEDULES = ("poly", "warmup_cosine", "constant")
_TOP_KEYS = {f.name for f in dataclasses.fields(TrainingSettings)}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _check_keys(given: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise BrainmetsError(
            f"unknown config key {where}.{unknown[0]}"
            + (f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
            + f"; expected one of: {', '.join(sorted(allowed))}"
        )


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BrainmetsError(f"config key {where} must be a mapping, got {type(value).__name__}")
    return value


def _number(value: Any, where: str, kind: type = float, minimum: float | None = None,
            maximum: float | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise BrainmetsError(f"config key {where} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    value = kind(value)
    if minimum is not None and value < minimum:
        raise BrainmetsError(f"config key {where} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise BrainmetsError(f"config key {where} must be <= {maximum}, got {value}")
    return value


def _range(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise BrainmetsError(f"config key {where} must be a [low, high] pair, got {value!r}")
    lo, hi = (_number(v, where) for v in value)
    if lo > hi:
        raise BrainmetsError(f"config key {where} must have low <= high, got {value!r}")
    return lo, hi


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise BrainmetsError(f"config key {where} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _optimizer(raw: Mapping[str, Any], where: str) -> OptimizerSettings:
    _check_keys(raw, {f.name for f in dataclasses.fields(OptimizerSettings)}, where)
    betas = raw.get("betas", (0.9, 0.999))
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise BrainmetsError(f"config key {where}.betas must be two numbers, got {betas!r}")
    return OptimizerSettings(
        name=_choice(raw.get("name"), _OPTIMIZERS, f"{where}.name"),
        lr=_number(raw.get("lr"), f"{where}.lr", minimum=0.0),
        momentum=_number(raw.get("momentum", 0.0), f"{where}.momentum", minimum=0.0, maximum=1.0),
        nesterov=bool(raw.get("nesterov", False)),
        betas=(_number(betas[0], f"{where}.betas", minimum=0.0, maximum=1.0),
               _number(betas[1], f"{where}.betas", minimum=0.0, maximum=1.0)),
        weight_decay=_number(raw.get("weight_decay", 0.0), f"{where}.weight_decay", minimum=0.0),
    )


def _schedule(raw: Mapping[str, Any], where: str) -> ScheduleSettings:
    _check_keys(raw, {f.name for f in dataclasses.fields(ScheduleSettings)}, where)
    return ScheduleSettings(
        name=_choice(raw.get("name"), _SCHEDULES, f"{where}.name"),
        exponent=_number(raw.get("exponent", 0.9), f"{where}.exponent", minimum=0.0),
        warmup_iterations=_number(raw.get("warmup_iterations", 0), f"{where}.warmup_iterations", int, 0),
        warmup_start_lr=_number(raw.get("warmup_start_lr", 1e-6), f"{where}.warmup_start_lr", minimum=0.0),
        min_lr=_number(raw.get("min_lr", 0.0), f"{where}.min_lr", minimum=0.0),
    )


def _task(name: str, raw: Mapping[str, Any]) -> TaskSettings:
    where = f"training.{name}"
    defaults = _TASK_DEFAULTS[name]
    _check_keys(raw, set(defaults), where)
    merged = {**defaults, **raw}
    # A partial optimizer/schedule mapping refines the task's defaults; a new name starts afresh
    # from that optimiser's own defaults, so SGD's momentum never leaks into Adam.
    opt_raw = dict(_mapping(raw.get("optimizer"), f"{where}.optimizer"))
    opt = opt_raw if opt_raw.get("name", defaults["optimizer"]["name"]) != defaults["optimizer"]["name"] \
        else {**defaults["optimizer"], **opt_raw}
    sch_raw = dict(_mapping(raw.get("schedule"), f"{where}.schedule"))
    sch = sch_raw if sch_raw.get("name", defaults["schedule"]["name"]) != defaults["schedule"]["name"] \
        else {**defaults["schedule"], **sch_raw}
    settings = TaskSettings(
        task=name,
        iterations=_number(merged["iterations"], f"{where}.iterations", int, 1),
        batch_patients=_number(merged["batch_patients"], f"{where}.batch_patients", int, 1),
        crops_per_patient=_number(merged["crops_per_patient"], f"{where}.crops_per_patient", int, 1),
        pos_fraction=_number(merged["pos_fraction"], f"{where}.pos_fraction", float, 0.0, 1.0),
        positive_centre=_choice(merged["positive_centre"], ("lesion", "voxel"), f"{where}.positive_centre"),
        optimizer=_optimizer(opt, f"{where}.optimizer"),
        schedule=_schedule(sch, f"{where}.schedule"),
        deep_supervision_decay=_number(merged.get("deep_supervision_decay", 0.5), f"{where}.deep_supervision_decay",
                                       float, 0.0, 1.0),
        grad_clip=_number(merged["grad_clip"], f"{where}.grad_clip", float, 0.0),
        detector_threshold=_number(merged.get("detector_threshold", 0.0), f"{where}.detector_threshold"),
        detector_draws=_number(merged.get("detector_draws", 4), f"{where}.detector_draws", int, 1),
    )
    # A warm-up longer than the budget is not an error (tiny CPU configs shorten the budget):
    # schedules.py clips it.
    return settings


def _augmentation(raw: Mapping[str, Any]) -> AugmentationSettings:
    where = "training.augmentation"
    fields_ = {f.name: f for f in dataclasses.fields(AugmentationSettings)}
    _check_keys(raw, set(fields_), where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        default = fields_[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise BrainmetsError(f"config key {where}.{key} must be true or false, got {value!r}")
            values[key] = value
        elif isinstance(default, tuple):
            values[key] = _range(value, f"{where}.{key}")
        elif key.endswith("_prob"):
            values[key] = _number(value, f"{where}.{key}", float, 0.0, 1.0)
        else:
            values[key] = _number(value, f"{where}.{key}", float, 0.0)
    return AugmentationSettings(**values)


def training_settings(config: Mapping[str, Any]) -> TrainingSettings:
    """Build :class:`TrainingSettings` from a whole config dict (reads its ``training`` section)."""
    raw = _mapping(config.get("training"), "training")
    _check_keys(raw, _TOP_KEYS, "training")
    top = {k: v for k, v in raw.items() if k not in ("segmentation", "detection", "augmentation")}
    ints = {"checkpoint_every": 1, "val_every": 0, "val_crops_per_case": 1, "log_every": 1, "prefetch": 0}
    values: dict[str, Any] = {}
    for key, minimum in ints.items():
        if key in top:
            values[key] = _number(top[key], f"training.{key}", int, minimum)
    for key in ("val_max_cases", "threads"):
        if top.get(key) is not None:
            values[key] = _number(top[key], f"training.{key}", int, 1)
    if "keep_best" in top:
        if not isinstance(top["keep_best"], bool):
            raise BrainmetsError(f"config key training.keep_best must be true or false, got {top['keep_best']!r}")
        values["keep_best"] = top["keep_best"]
    if "device" in top:
        device = str(top["device"])
        if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise BrainmetsError(f"config key training.device must be auto, cpu, cuda or cuda:N, got {device!r}")
        values["device"] = device
    if "channels_last" in top:
        cl = top["channels_last"]
        values["channels_last"] = {True: "true", False: "false"}.get(cl, cl)
        _choice(values["channels_last"], ("auto", "true", "false"), "training.channels_last")
    return TrainingSettings(
        segmentation=_task("segmentation", _mapping(raw.get("segmentation"), "training.segmentation")),
        detection=_task("detection", _mapping(raw.get("detection"), "training.detection")),
        augmentation=_augmentation(_mapping(raw.get("augmentation"), "training.augmentation")),
        **values,
    )


def model_task(name: str, spec: Mapping[str, Any]) -> str:
    """Task of a registry model: ``spec['task']`` if given, else detection for DenseNets."""
    task = spec.get("task")
    if task is not None:
        return _choice(task, TASKS, f"models.{name}.task")
    arch = str(spec.get("arch", "")).lower()
    return "detection" if arch.startswith("densenet") else "segmentation"


def model_patch(name: str, spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """Training patch size of a registry model (``spec['patch']``)."""
    patch = spec.get("patch")
    if not isinstance(patch, (list, tuple)) or len(patch) != 3 or not all(
        isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in patch
    ):
        raise BrainmetsError(f"config key models.{name}.patch must be three positive integers, got {patch!r}")
    return tuple(int(p) for p in patch)  # type: ignore[return-value]


def model_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A copy of ``models.<name>`` from the config, with a clear error when it is missing."""
    models = _mapping(config.get("models"), "models")
    if name not in models:
        raise BrainmetsError(
            f"model {name!r} is not in the config's models section; available: "
            f"{', '.join(sorted(models)) or '(none)'}"
        )
    return copy.deepcopy(dict(_mapping(models[name], f"models.{name}")))
