"""The modality study's decision file, ``<results>/selection/modality.json``: path, writer and reader.

`brainmets select` (:mod:`brainmets.reporting.selection`) writes it; the
subset alias ``selected`` stands for its ``chosen_subset``, which training
(``brainmets train --subset selected --selection FILE``) and reporting (the
two-stage rows of the tables) read through :func:`selected_subset`.
Torch- and pandas-free: reading a decision costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainmets.constants import SELECTED, canonical_subset, parse_subset
from brainmets.errors import BrainmetsError
from brainmets.io import read_json, write_json


def selection_path(results: str | Path) -> Path:
    """Where the workflow keeps the decision under a results root."""
    return Path(results) / "selection" / "modality.json"


def write_selection(decision: dict[str, Any], out: str | Path) -> Path:
    """Write a decision (see :func:`brainmets.reporting.selection.select_subset`) atomically."""
    out = Path(out)
    write_json(out, decision)
    return out


def read_selection(path: str | Path) -> dict[str, Any]:
    """The decision at ``path``, checked: a mapping whose ``chosen_subset`` is a canonical subset key."""
    path = Path(path)
    if not path.is_file():
        raise BrainmetsError(
            f"modality decision file not found: {path} (written by `brainmets select`; "
            f"the subset {SELECTED!r} stands for its chosen_subset)"
        )
    decision = read_json(path)
    if not isinstance(decision, dict) or "chosen_subset" not in decision:
        raise BrainmetsError(f"{path} has no 'chosen_subset' (expected a `brainmets select` decision file)")
    try:
        parse_subset(str(decision["chosen_subset"]))
    except BrainmetsError as exc:
        raise BrainmetsError(f"{path}: chosen_subset {decision['chosen_subset']!r}: {exc}") from None
    return decision


def selected_subset(path: str | Path) -> str:
    """The canonical subset the alias ``selected`` stands for, from the decision file at ``path``."""
    return str(read_selection(path)["chosen_subset"])


def resolve_subset(subset: str, selection: str | Path | None = None) -> str:
    """A canonical subset key from ``KEY`` (any spelling), ``selected`` (needs ``selection``) or ``@<decision>``."""
    if subset == SELECTED:
        if selection is None:
            raise BrainmetsError(f"--subset {SELECTED} needs --selection {selection_path('results')}")
        return selected_subset(selection)
    if subset.startswith("@"):
        return selected_subset(subset[1:])
    return canonical_subset(subset)
