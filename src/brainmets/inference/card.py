"""Model cards (``model.json``): what a trained run is, what it needs and how well it did.

A run's card is written from the files the run already holds, never from
memory of the training job:

* ``model.pt``'s ``info`` (network, spec, modality subset, patch, task, seed,
  iterations);
* the run's weights files, ``model.pt`` (final) and ``best.pt`` (best
  validated), each with its SHA-256, which ties the card to those exact
  weights, and its iteration and score from ``checkpoints.json``;
* ``config.yaml`` (the resolved training settings; its SHA-256 is the training
  config digest) and, through its ``data.cache``, the preprocessed cache's
  metadata, which says how cases were preprocessed (the target spacing);
* ``model_info.json`` (parameters, GMAC per window) when present;
* ``metrics/<split>.tsv`` (written by ``brainmets evaluate``) when present:
  the mean of every metric per region;
* optionally a postprocessing decision (``postprocessing.json``, minimum
  component volumes chosen on the validation split:
  :mod:`brainmets.inference.postprocess`), which ``segment`` then applies.

A card for several runs (a seed ensemble) or a detector + segmentor pair
lists the member cards and what they share; :func:`check_members` refuses
members that do not share the modality subset and the preprocessing, since
their probabilities would not describe the same input.

``brainmets segment`` reads each run's card (or builds it when the run has
none) for the weights ``inference.checkpoint`` names (:func:`weights_path`,
as for the study's predictions) and checks it against that file before
using the run: a card whose digest for it differs describes other weights
and is refused.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from brainmets.constants import CARD_NAME, CHECKPOINT_FILES, LABELS, SPLITS, TRAIN_REGIONS, parse_subset
from brainmets.errors import BrainmetsError
from brainmets.io import read_json, write_json

log = logging.getLogger(__name__)

# 2: a digest per weights file (best.pt, model.pt) instead of model.pt's alone
CARD_FORMAT = "brainmets-model-card/2"
#: the final weights, written last by training: their presence marks a finished run
MODEL_NAME = CHECKPOINT_FILES["final"]
#: Metric columns of ``metrics/<split>.tsv`` summarised in a card (mean over cases, per region).
CARD_METRICS = ("legacy_dice", "legacy_hd95", "lesion_dice", "lesion_hd95")
_SOFTWARE = ("brainmets", "torch", "monai", "numpy", "nibabel")


def run_dir_of(path: str | Path) -> Path:
    """A run directory from itself or from one of its weights files."""
    path = Path(path)
    return path.parent if path.name in CHECKPOINT_FILES.values() and path.is_file() else path


def weights_path(run_dir: str | Path, checkpoint: str) -> Path:
    """The weights file of a finished run that ``inference.checkpoint`` (best|final) names."""
    run_dir = run_dir_of(run_dir)
    if checkpoint not in CHECKPOINT_FILES:
        raise BrainmetsError(f"inference.checkpoint is {checkpoint!r}; expected one of {', '.join(CHECKPOINT_FILES)}")
    if not run_dir.is_dir():
        raise BrainmetsError(f"model run directory not found: {run_dir} (expected a directory holding {MODEL_NAME})")
    if not (run_dir / MODEL_NAME).is_file():
        raise BrainmetsError(f"{run_dir} holds no {MODEL_NAME}: not a finished training run")
    path = run_dir / CHECKPOINT_FILES[checkpoint]
    if not path.is_file():
        raise BrainmetsError(
            f"{run_dir} holds no {path.name}, the weights inference.checkpoint: {checkpoint} names; "
            f"choose final (its {MODEL_NAME}) or retrain it"
        )
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def preprocessing_record(spacing: Sequence[float] | None) -> dict[str, Any]:
    """How a case is turned into network input (:mod:`brainmets.data.preprocess`); equal records, equal input."""
    from brainmets.data.preprocess import CROP_MARGIN, FORMAT_VERSION

    return {
        "code": "brainmets.data.preprocess",
        "format_version": FORMAT_VERSION,
        "orientation": "RAS (axis permutation and flips only)",
        "crop": f"bounding box of the brain (nonzero in any sequence) + {CROP_MARGIN} voxels",
        "spacing_mm": None if spacing is None else [float(s) for s in spacing],
        "resampling": "none (native grid)" if spacing is None else "linear (images)",
        "normalisation": "z-score per sequence over the brain, 0 outside",
    }


def _cache_spacing(run_dir: Path, config: Mapping[str, Any]) -> list[float] | None:
    """The spacing the run's training cache was built with (``requested_spacing`` of its cases)."""
    cache = Path(str((config.get("data") or {}).get("cache", "")))
    metas = sorted(cache.glob("*.json")) if str(cache) and cache.is_dir() else []
    if not metas:
        raise BrainmetsError(
            f"{run_dir}: cannot tell how its cases were preprocessed: the cache recorded in "
            f"{run_dir / 'config.yaml'} ({cache or 'none'}) holds no case metadata; give the spacing "
            "explicitly (`brainmets card --spacing X Y Z` or `--native`)"
        )
    meta = read_json(metas[0])
    if "requested_spacing" not in meta:
        raise BrainmetsError(f"{metas[0]} lacks 'requested_spacing': not a brainmets cache record")
    return meta["requested_spacing"]


def _checkpoints(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each weights file of the run by ``inference.checkpoint`` choice: its digest, iteration and score."""
    listing = run_dir / "checkpoints.json"
    selection = read_json(listing) if listing.is_file() else {}
    return {choice: {**(selection.get(choice) or {}), "file": name, "sha256": sha256(run_dir / name)}
            for choice, name in CHECKPOINT_FILES.items() if (run_dir / name).is_file()}


def _metrics_summary(run_dir: Path) -> dict[str, Any]:
    from brainmets.io import read_table

    summary: dict[str, Any] = {}
    for split in SPLITS:
        path = run_dir / "metrics" / f"{split}.tsv"
        if not path.is_file():
            continue
        table = read_table(path, what="metrics table")
        missing = {"case", "region", *CARD_METRICS} - set(table.columns)
        if missing:
            raise BrainmetsError(f"metrics table {path} lacks column(s) {', '.join(sorted(missing))}")
        per_region = {}
        for region, rows in table.groupby("region", sort=False):
            per_region[str(region)] = {
                metric: (value if math.isfinite(value) else None)
                for metric, value in ((m, float(rows[m].mean())) for m in CARD_METRICS)
            }
        summary[split] = {"file": f"metrics/{split}.tsv", "cases": int(table["case"].nunique()),
                          "mean_by_region": per_region}
    return summary


def build_run_card(run_dir: str | Path, spacing: Sequence[float] | None | str = "cache") -> dict[str, Any]:
    """The card of one run directory, from its files (see the module docstring).

    ``spacing``: ``"cache"`` reads the preprocessing spacing from the run's training
    cache; ``None`` (native grid) or three numbers (mm) state it when the cache is gone.
    """
    import yaml

    from brainmets.models import count_parameters, load_trained, model_flops

    run_dir = run_dir_of(run_dir)
    model_path = run_dir / MODEL_NAME
    model, info = load_trained(model_path)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise BrainmetsError(f"{run_dir}: no config.yaml; expected a run directory written by `brainmets train`")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BrainmetsError(f"{config_path} is not valid YAML: {exc}") from exc
    if spacing == "cache":
        spacing = _cache_spacing(run_dir, config)
    size_path = run_dir / "model_info.json"
    size = read_json(size_path) if size_path.is_file() else {}
    patch = [int(p) for p in info["patch"]]
    data = config.get("data") or {}
    card = {
        "format": CARD_FORMAT,
        "kind": "run",
        "run_dir": str(run_dir.resolve()),
        "task": info["task"],
        "network": {
            "name": info["model_name"],
            "arch": (info.get("spec") or {}).get("arch"),
            "spec": info["spec"],
            "parameters": int(size.get("parameters", count_parameters(model))),
            "gmac_per_window": float(size.get("gmac_per_window",
                                               model_flops(model, int(info["in_channels"]), patch) / 2e9)),
            "in_channels": int(info["in_channels"]),
            "out_channels": int(info["out_channels"]),
            "outputs": list(TRAIN_REGIONS) if info["task"] == "segmentation" else ["tumour-in-window logit"],
        },
        "subset": info["subset"],
        "channels": list(parse_subset(str(info["subset"]))),
        "patch": patch,
        "preprocessing": preprocessing_record(spacing),
        "labels": {str(value): name for value, name in LABELS.items()},
        "training": {
            "study": info.get("study", config.get("study")),
            "seed": int(info["seed"]),
            "iterations": int(info["iteration"]),
            "train_on_detected": bool(info.get("train_on_detected", False)),
            "n_train": data.get("n_train"),
            "n_val": data.get("n_val"),
            "config": "config.yaml",
            "config_sha256": sha256(config_path),
        },
        "checkpoints": _checkpoints(run_dir),
        "metrics": _metrics_summary(run_dir),
        "software": software_versions(),
    }
    return card


def write_run_card(run_dir: str | Path, spacing: Sequence[float] | None | str = "cache",
                   postprocessing: str | Path | None = None) -> Path:
    """(Re)write ``<run_dir>/model.json`` from the run's files (and a postprocessing decision file); returns its path."""
    from brainmets.inference.postprocess import read_decision

    run_dir = run_dir_of(run_dir)
    card = build_run_card(run_dir, spacing)
    if postprocessing is not None:
        card["postprocessing"] = {**read_decision(postprocessing), "file": str(Path(postprocessing).resolve())}
    path = run_dir / CARD_NAME
    write_json(path, card)
    return path


def read_run_card(run_dir: str | Path, checkpoint: str) -> dict[str, Any]:
    """The card of a run for the weights ``checkpoint`` (best|final) names, under ``"checkpoint"``.

    Its ``model.json`` checked against those weights, or one built from the run's files.
    """
    weights = weights_path(run_dir, checkpoint)
    run_dir = weights.parent
    path = run_dir / CARD_NAME
    if path.is_file():
        card = read_json(path)
    else:
        log.info("%s has no %s: building its card from the run's files (write it with `brainmets card %s`)",
                 run_dir, CARD_NAME, run_dir)
        card = build_run_card(run_dir)
    rewrite = f"rewrite it with `brainmets card {run_dir}`"
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or card.get("kind") != "run":
        raise BrainmetsError(f"{path} is not a run's model card (expected format {CARD_FORMAT!r}); {rewrite}")
    entry = (card.get("checkpoints") or {}).get(checkpoint) or {}
    digest = sha256(weights)
    if entry.get("sha256") != digest:
        raise BrainmetsError(
            f"model card {path} does not match {weights}: it describes weights with SHA-256 "
            f"{entry.get('sha256')}, the file has {digest}; {rewrite}"
        )
    # The digest ties the card to these weights wherever the run now lies.
    return {**card, "run_dir": str(run_dir.resolve()), "checkpoint": {"choice": checkpoint, **entry}}


def check_members(cards: Sequence[Mapping[str, Any]], what: str) -> None:
    """Members of one model (an ensemble, a detector + segmentor pair) must share subset and preprocessing."""
    first = cards[0]
    for card in cards[1:]:
        for key, name in (("subset", "modality subset"), ("preprocessing", "preprocessing")):
            if card[key] != first[key]:
                raise BrainmetsError(
                    f"{what}: {card['run_dir']} and {first['run_dir']} differ in {name} "
                    f"({card[key]} vs {first[key]}); members of one model must see the same input"
                )


def combined_card(members: Sequence[Mapping[str, Any]], inference: Mapping[str, Any]) -> dict[str, Any]:
    """The card of what ``segment`` ran: one member (a run or a two-stage pair) or an ensemble of them.

    ``members``: per member ``{"segmentor": run card, "detector": run card | None}``.
    """
    def member_card(member: Mapping[str, Any]) -> dict[str, Any]:
        if member.get("detector") is None:
            return dict(member["segmentor"])
        return {"format": CARD_FORMAT, "kind": "two_stage", "subset": member["segmentor"]["subset"],
                "channels": member["segmentor"]["channels"], "preprocessing": member["segmentor"]["preprocessing"],
                "detector": member["detector"], "segmentor": member["segmentor"]}

    cards = [member_card(m) for m in members]
    if len(cards) == 1:
        return {**cards[0], "inference": dict(inference)}
    return {
        "format": CARD_FORMAT,
        "kind": "ensemble",
        "combine": "mean of the members' region probabilities (on each case's own grid), then thresholds",
        "subset": cards[0]["subset"],
        "channels": cards[0]["channels"],
        "preprocessing": cards[0]["preprocessing"],
        "labels": {str(value): name for value, name in LABELS.items()},
        "inference": dict(inference),
        "members": cards,
        "software": software_versions(),
    }


def describe(card: Mapping[str, Any]) -> str:
    """One line for the log: what a card describes."""
    def one(c: Mapping[str, Any]) -> str:
        if c["kind"] == "two_stage":
            return f"two-stage ({one(c['detector'])} + {one(c['segmentor'])})"
        return f"{c['network']['name']} seed {c['training']['seed']} {c['checkpoint']['file']} ({c['run_dir']})"

    members = card["members"] if card["kind"] == "ensemble" else [card]
    spacing = card["preprocessing"]["spacing_mm"]
    head = f"ensemble of {len(members)}: " if card["kind"] == "ensemble" else ""
    return (f"{head}{'; '.join(one(m) for m in members)}; subset {card['subset']} "
            f"(channels {', '.join(card['channels'])}), preprocessing: RAS, brain crop, "
            f"{'native grid' if spacing is None else f'{spacing} mm'}, z-score")
