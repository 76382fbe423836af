"""Choose the modality subset of the two-stage model from the modality study.

Score of a subset (documented in the decision file as ``score``):

    per seed:  s_seed = mean over ``regions`` of (mean over the split's cases of ``metric``)
    subset:    mean of s_seed over seeds   (std: sample std over seeds, n_seeds)

Cases with a NaN value are skipped in the case mean. Dice metrics are
maximised, HD95 metrics minimised. Ties (equal means) go to the subset with
fewer sequences (cheaper to acquire), then to the canonical key, so the choice
is deterministic.

Selecting on ``test`` leaks the test set into model choice: it is refused
unless asked for explicitly (``allow_test``), and then recorded as a warning
in the decision file and on stderr. A fixed ``override`` (e.g. the paper's
T1c+T1+FLAIR) is recorded as such; the ranking is still computed and written
so the override can be compared with what the data would have chosen.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from brainmets.constants import REGIONS, SELECTED, SPLITS, canonical_subset, subset_key, subset_label
from brainmets.errors import BrainmetsError
from brainmets.reporting.collect import make_group, read_metrics
from brainmets.reporting.stats import direction, per_seed_region_means, summarise_seeds

log = logging.getLogger(__name__)

SCORE_DEFINITION = (
    "per seed: mean over regions of (mean over {split} cases of {metric}); "
    "subset score: mean over seeds ({direction} is best); ties: fewer sequences, then key"
)


def discover_subsets(results: str | Path, study: str, model: str) -> list[str]:
    """Canonical subset keys that have a directory under ``results/study/model`` (``selected`` excluded)."""
    base = Path(results) / study / model
    if not base.is_dir():
        raise BrainmetsError(f"no runs of {study}/{model}: directory {base} does not exist")
    keys = []
    for p in sorted(base.iterdir()):
        if not p.is_dir() or p.name == SELECTED:
            continue
        try:
            if subset_key(p.name.split("+")) == p.name:
                keys.append(p.name)
        except BrainmetsError:
            log.warning("ignoring %s: not a canonical subset key", p)
    if not keys:
        raise BrainmetsError(f"no subset directories (e.g. t1c+t1n+t2f) under {base}")
    return keys


def rank_subsets(
    results: str | Path,
    study: str,
    model: str,
    metric: str,
    split: str,
    regions: list[str] | tuple[str, ...],
    subsets: list[str] | None = None,
    seeds: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Ranking of subsets, best first: ``subset, label, mean, std, n_seeds, per_seed``.

    Every missing metrics file of every subset is reported in one error.
    """
    best = direction(metric)
    subsets = subsets or discover_subsets(results, study, model)
    rows, problems = [], []
    for subset in subsets:
        try:
            group = make_group(results, study, model, subset, subset_label(subset), seeds)
            metrics = read_metrics(group, split, regions)
        except BrainmetsError as exc:
            problems.append(str(exc))
            continue
        per_seed = per_seed_region_means(metrics, metric, regions).mean(axis=1, skipna=True)
        mean, std, n = summarise_seeds(per_seed.to_frame("score"))
        rows.append({
            "subset": subset,
            "label": subset_label(subset),
            "mean": float(mean["score"]),
            "std": None if math.isnan(std["score"]) else float(std["score"]),
            "n_seeds": n,
            "per_seed": {f"seed{int(s)}": float(v) for s, v in per_seed.items()},
        })
    if problems:
        raise BrainmetsError("cannot rank subsets:\n" + "\n".join(problems))
    sign = -1.0 if best == "max" else 1.0
    rows.sort(key=lambda r: (
        math.inf if math.isnan(r["mean"]) else sign * r["mean"],
        len(r["subset"].split("+")),
        r["subset"],
    ))
    return rows


def select_subset(
    results: str | Path,
    study: str = "modality",
    model: str = "unet",
    metric: str = "lesion_dice",
    split: str = "val",
    regions: list[str] | tuple[str, ...] = ("WT", "TC", "ET"),
    override: str | None = None,
    allow_test: bool = False,
    subsets: list[str] | None = None,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """The decision: the chosen subset, how it was chosen and the full ranking."""
    if split not in SPLITS:
        raise BrainmetsError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "train":
        raise BrainmetsError("selecting on the training split measures fit, not generalisation; use val")
    unknown = [r for r in regions if r not in REGIONS]
    if unknown:
        raise BrainmetsError(f"unknown region(s) {', '.join(unknown)}; choose from {', '.join(REGIONS)}")
    warning = None
    if split == "test":
        if not allow_test:
            raise BrainmetsError(
                "refusing to select on the test split: that leaks the test set into the model choice. "
                "Select on val, or pass --allow-test to make this an explicit, recorded choice"
            )
        warning = (
            f"subset selected on the TEST split ({metric}); test results of the selected model "
            "are optimistically biased"
        )
        log.warning(warning)
    if override is not None:
        override = canonical_subset(override)
    if subsets is not None:
        subsets = [canonical_subset(s) for s in subsets]
    ranking = rank_subsets(results, study, model, metric, split, list(regions), subsets, seeds)
    best = direction(metric)
    chosen = override if override is not None else ranking[0]["subset"]
    if override is not None:
        ranked = [r["subset"] for r in ranking]
        position = ranked.index(override) + 1 if override in ranked else None
        log.info("subset fixed by override: %s (rank %s of %d by %s on %s)",
                 override, position, len(ranking), metric, split)
    else:
        log.info("selected %s (%s = %.4f on %s)", chosen, metric, ranking[0]["mean"], split)
    return {
        "chosen_subset": chosen,
        "chosen_label": subset_label(chosen),
        "study": study,
        "model": model,
        "metric": metric,
        "split": split,
        "regions": list(regions),
        "direction": best,
        "override": override,
        "score": SCORE_DEFINITION.format(split=split, metric=metric, direction=best),
        "warning": warning,
        "ranking": ranking,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
