"""Names shared by every stage: sequences, labels, regions, splits, subset keys.

Kept free of heavy imports so that torch-free jobs (evaluation, tables) can use it.
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterable

from brainmets.errors import BrainmetsError

#: BraTS-MET 2023 sequence suffixes, in cache channel order.
MODALITIES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
#: Names used in the paper's tables.
MODALITY_NAMES: dict[str, str] = {"t1n": "T1", "t1c": "T1c", "t2w": "T2", "t2f": "FLAIR"}
SEG_SUFFIX = "seg"

#: BraTS-MET label values.
LABELS: dict[int, str] = {1: "NETC", 2: "SNFH", 3: "ET"}
#: Evaluated regions -> label values they contain.
REGIONS: dict[str, tuple[int, ...]] = {
    "WT": (1, 2, 3),
    "TC": (1, 3),
    "ET": (3,),
    "NETC": (1,),
    "SNFH": (2,),
}
#: The three nested regions a network predicts as sigmoid channels, in channel order.
TRAIN_REGIONS: tuple[str, ...] = ("WT", "TC", "ET")

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: The weights file of a finished run for each ``inference.checkpoint`` choice: training
#: writes both (and checkpoints.json, keyed the same way, with their iteration and score).
CHECKPOINT_FILES: dict[str, str] = {"best": "best.pt", "final": "model.pt"}

#: The model card written beside every run's weights and every segmentation (brainmets.inference.card).
CARD_NAME = "model.json"

#: Folders of a seed ensemble's Table 2 rows (``ensembles/<source>/<subset>/<variant>/``): the seeds'
#: probabilities averaged, the same with mirroring, and that with the postprocessing tuned on val.
ENSEMBLE_UNMIRRORED = "mean"
ENSEMBLE_MIRRORED = "mirror"
ENSEMBLE_POSTPROCESSED = "mirror_pp"


def subset_key(modalities: Iterable[str]) -> str:
    """Canonical key of a modality subset: validated, de-duplicated, sorted, '+'-joined."""
    mods = list(modalities)
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown:
        raise BrainmetsError(
            f"unknown modality {', '.join(map(repr, unknown))}; expected a subset of "
            f"{', '.join(MODALITIES)} (BraTS-MET suffixes: t1n=T1, t1c=T1c, t2w=T2, t2f=FLAIR)"
        )
    if not mods:
        raise BrainmetsError("empty modality subset; choose at least one of " + ", ".join(MODALITIES))
    return "+".join(sorted(set(mods)))


def parse_subset(key: str) -> tuple[str, ...]:
    """Modalities of a subset key, in cache channel order (``MODALITIES`` order)."""
    mods = [m for m in key.split("+") if m]
    canonical = subset_key(mods)
    if canonical != key:
        raise BrainmetsError(f"subset key {key!r} is not canonical; write it as {canonical!r}")
    return tuple(m for m in MODALITIES if m in mods)


def subset_channels(key: str) -> list[int]:
    """Channel indices of a subset in the preprocessed cache."""
    return [MODALITIES.index(m) for m in parse_subset(key)]


def all_subsets() -> list[str]:
    """The 15 non-empty subsets of the four sequences, as canonical keys."""
    return [
        subset_key(combo)
        for r in range(1, len(MODALITIES) + 1)
        for combo in combinations(MODALITIES, r)
    ]


ALL_FOUR: str = subset_key(MODALITIES)

#: Subset alias for the subset the modality study chose (read from its decision
#: file by :mod:`brainmets.decision`); a path component of the two-stage runs.
SELECTED = "selected"
#: Subset alias for all four sequences (canonicalised to :data:`ALL_FOUR`).
ALL = "all"


def canonical_subset(value: str | Iterable[str], aliases: bool = False) -> str:
    """Canonical key of a subset written as ``t2f + t1c``, ``t1c+t2f`` or ``[t2f, t1c]``.

    With ``aliases``, ``all`` becomes :data:`ALL_FOUR` and ``selected`` stays
    ``selected`` (it names a decision, resolved later). Raises
    :class:`BrainmetsError` naming an unknown modality.
    """
    if aliases and value == SELECTED:
        return SELECTED
    if aliases and value == ALL:
        return ALL_FOUR
    mods = value if isinstance(value, (list, tuple)) else [m.strip() for m in str(value).split("+") if m.strip()]
    return subset_key(mods)


def subset_label(key: str) -> str:
    """Human-readable subset name, e.g. 'T1c+T1+FLAIR'."""
    order = ("t1c", "t1n", "t2w", "t2f")  # paper's order: T1c first
    mods = parse_subset(key)
    return "+".join(MODALITY_NAMES[m] for m in order if m in mods)
