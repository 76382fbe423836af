"""Train/val/test split of the indexed cases, stratified by the number of metastases.

Split sizes (``split_sizes``)
    Every split except the last one with a non-zero fraction gets
    ``floor(fraction * n)`` cases; the last (normally ``test``) takes the rest.
    For the paper's 238 BraTS-Mets cases and fractions 0.85/0.05/0.10 this gives
    202/11/25, the paper's split. When a split with a non-zero fraction would be
    empty, it takes one case from the largest split, so every requested split
    has at least one case whenever ``n`` allows it.

Stratification (``make_split``)
    Cases are grouped by metastasis count (``n_lesions``) into the strata
    0-1, 2-3, 4-9 and >=10. A stratum too small to expect one case in the
    smallest split (fewer than ``1 / smallest fraction`` cases) is merged into
    its smaller neighbour. Cases are shuffled within each stratum (seeded),
    the strata are placed one after the other, and the sequence is dealt to
    the splits by smooth weighted round-robin: each next case goes to the split
    furthest behind its quota. This hits the split sizes exactly and gives
    every stratum its proportional share of each split to within about one
    case. The same seed gives the same split; the order of rows in the case
    table does not matter.

A split file written by hand (``--split-file``) is validated instead of drawn:
every indexed ``ok`` case must appear exactly once, with a split name in
train/val/test, and every split must be non-empty. With ``on_bad_case="skip"``
(``data.on_bad_case``) a published split is used on a root that holds only part
of it: listed cases the root lacks (or the index skipped) are dropped, indexed
cases the file does not list are left out, both with a warning naming them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from brainmets.constants import SPLITS
from brainmets.errors import BrainmetsError

log = logging.getLogger(__name__)

#: The paper's 202/11/25 split of 238 cases.
DEFAULT_FRACTIONS: tuple[float, ...] = (0.85, 0.05, 0.10)
#: Lower edges of the metastasis-count strata: 0-1, 2-3, 4-9, >=10.
STRATA_EDGES: tuple[int, ...] = (0, 2, 4, 10)
SPLIT_COLUMNS: tuple[str, ...] = ("case", "split")
_FLOAT_SLACK = 1e-9  # 0.6 * 10 is 6.000000000000001 and 0.7 * 10 is 7.000000000000001 in floats


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Fractions of train/val/test: three non-negative numbers summing to 1."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS):
        raise BrainmetsError(
            f"expected {len(SPLITS)} split fractions ({'/'.join(SPLITS)}), got {len(fractions)}: {fractions}"
        )
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise BrainmetsError(f"split fractions must be finite and non-negative, got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise BrainmetsError(f"split fractions must sum to 1, got {fractions} (sum {sum(fractions):g})")
    return fractions


def split_sizes(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[int, ...]:
    """Number of cases per split (see the module docstring for the rounding rule)."""
    fractions = check_fractions(fractions)
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if n < len(positive):
        named = ", ".join(SPLITS[i] for i in positive)
        raise BrainmetsError(f"cannot split {n} case(s) into {len(positive)} non-empty splits ({named})")
    last = positive[-1]
    sizes = [0] * len(fractions)
    for i in positive:
        if i != last:
            sizes[i] = math.floor(fractions[i] * n + _FLOAT_SLACK)
    sizes[last] = n - sum(sizes)
    for i in positive:
        if sizes[i] == 0:
            donor = max(range(len(sizes)), key=lambda j: sizes[j])
            sizes[donor] -= 1
            sizes[i] = 1
    return tuple(sizes)


def stratum_labels(n_lesions: Iterable[int], edges: Sequence[int] = STRATA_EDGES) -> list[str]:
    """Name of each count's stratum, e.g. ``"2-3"`` or ``">=10"``."""
    names = _stratum_names(edges)
    counts = np.asarray(list(n_lesions), dtype=np.int64)
    if (counts < 0).any():
        raise BrainmetsError("metastasis counts must be non-negative")
    index = np.searchsorted(np.asarray(edges), counts, side="right") - 1
    return [names[i] for i in index]


def _merge_small_strata(sizes: list[int], min_size: int) -> list[int]:
    """Map from stratum index to merged group index, merging strata below ``min_size``.

    The smallest stratum below the minimum joins its smaller adjacent
    neighbour (counts stay ordered), until every group reaches the minimum or
    one group is left. Empty strata join their lower neighbour.
    """
    groups = [[i] for i in range(len(sizes))]
    totals = list(sizes)
    while len(groups) > 1 and min(totals) < min_size:
        k = int(np.argmin(totals))
        if k == 0:
            j = 1
        elif k == len(groups) - 1:
            j = k - 1
        else:
            j = k - 1 if totals[k - 1] <= totals[k + 1] else k + 1
        lo, hi = sorted((k, j))
        groups[lo:hi + 1] = [groups[lo] + groups[hi]]
        totals[lo:hi + 1] = [totals[lo] + totals[hi]]
    mapping = [0] * len(sizes)
    for g, members in enumerate(groups):
        for i in members:
            mapping[i] = g
    return mapping


def count_strata(
    n_lesions: Iterable[int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    edges: Sequence[int] = STRATA_EDGES,
) -> list[str]:
    """The stratum ``make_split`` puts each case in: its count bin, merged when too small.

    A bin is too small when it holds fewer than ``1 / smallest non-zero
    fraction`` cases (it could not give the smallest split one case); merged
    bins are named by their joint range, e.g. ``">=4"``.
    """
    counts = np.asarray(list(n_lesions), dtype=np.int64)
    if (counts < 0).any():
        raise BrainmetsError("metastasis counts (n_lesions) must be non-negative")
    smallest = min(f for f in check_fractions(fractions) if f > 0)
    min_size = math.ceil(1.0 / smallest - _FLOAT_SLACK)
    bins = np.searchsorted(np.asarray(edges), counts, side="right") - 1
    group = _merge_small_strata(np.bincount(bins, minlength=len(edges)).tolist(), min_size)
    names = []
    for g in sorted(set(group)):
        members = [i for i, gi in enumerate(group) if gi == g]
        lo = edges[members[0]]
        hi = edges[members[-1] + 1] - 1 if members[-1] + 1 < len(edges) else None
        names.append(f">={lo}" if hi is None else (f"{lo}-{hi}" if hi > lo else str(lo)))
    return [names[group[b]] for b in bins]


def _deal(sizes: Sequence[int]) -> list[int]:
    """Smooth weighted round-robin: a sequence of split indices with ``sizes[i]`` of each.

    Each step goes to the split with the largest ``quota - dealt``, so every
    stretch of the sequence holds each split in proportion to its size.
    """
    n = sum(sizes)
    dealt = [0] * len(sizes)
    order = []
    for step in range(1, n + 1):
        deficits = [size * step / n - got for size, got in zip(sizes, dealt)]
        i = int(np.argmax(deficits))
        dealt[i] += 1
        order.append(i)
    return order


def _ok_cases(cases_df: "pandas.DataFrame") -> "pandas.DataFrame":  # noqa: F821
    if "status" in cases_df.columns:
        cases_df = cases_df[cases_df["status"] == "ok"]
    return cases_df


def make_split(
    cases_df: "pandas.DataFrame",  # noqa: F821
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> "pandas.DataFrame":  # noqa: F821
    """Draw a seeded train/val/test split of the ``ok`` cases, stratified by ``n_lesions``.

    Returns columns ``case, split``, in the order of ``cases_df``.
    """
    import pandas as pd

    for column in ("case", "n_lesions"):
        if column not in cases_df.columns:
            raise BrainmetsError(f"case table lacks column {column!r}; index the cohort with `brainmets index`")
    ok = _ok_cases(cases_df)
    cases = ok["case"].astype(str).tolist()
    if len(set(cases)) != len(cases):
        raise BrainmetsError("case table lists a case more than once")
    sizes = split_sizes(len(cases), fractions)
    strata = np.asarray(count_strata(ok["n_lesions"].astype(int), fractions))

    # Sort by case id first so the result does not depend on the table's row order;
    # strata in count order, shuffled within, then dealt to the splits.
    rng = np.random.default_rng(seed)
    by_id = np.argsort(np.asarray(cases, dtype=object), kind="stable")
    sequence = []
    for name in dict.fromkeys(strata[np.argsort(ok["n_lesions"].astype(int).to_numpy(), kind="stable")]):
        members = by_id[strata[by_id] == name]
        sequence.extend(rng.permutation(members).tolist())
    assignment = np.empty(len(cases), dtype=object)
    for position, split_index in zip(sequence, _deal(sizes)):
        assignment[position] = SPLITS[split_index]
    split = pd.DataFrame({"case": cases, "split": assignment.tolist()})
    log.info("split %d cases: %s", len(cases), ", ".join(f"{s} {k}" for s, k in zip(SPLITS, sizes)))
    return split


def _structure_problems(split_df: "pandas.DataFrame") -> list[str]:  # noqa: F821
    """Problems of a split table on its own: columns, split names, duplicate cases."""
    missing = [c for c in SPLIT_COLUMNS if c not in split_df.columns]
    if missing:
        return [f"missing column(s) {', '.join(missing)} (found {', '.join(map(str, split_df.columns))})"]
    problems = []
    invalid = split_df.loc[~split_df["split"].isin(SPLITS)]
    if len(invalid):
        values = sorted(set(map(str, invalid["split"])))
        problems.append(
            f"invalid split name(s) {', '.join(map(repr, values))} in {len(invalid)} row(s) "
            f"(e.g. case {invalid['case'].iloc[0]}); expected one of {', '.join(SPLITS)}"
        )
    duplicated = sorted(set(split_df.loc[split_df["case"].duplicated(), "case"]))
    if duplicated:
        problems.append(f"case(s) listed more than once: {_list(duplicated)}")
    return problems


def _list(items: Sequence[str], limit: int = 20) -> str:
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _normalise(split_df: "pandas.DataFrame") -> "pandas.DataFrame":  # noqa: F821
    split_df = split_df.copy()
    for column in SPLIT_COLUMNS:
        if column in split_df.columns:
            split_df[column] = split_df[column].astype(str).str.strip()
    return split_df


def load_split(path: str | Path) -> "pandas.DataFrame":  # noqa: F821
    """Read a split table (TSV, or CSV for ``.csv``) with columns ``case, split``.

    Checks the columns, the split names and duplicate cases; use
    :func:`validate_split` to check it against the case table as well.
    """
    from brainmets.io import read_table

    split_df = _normalise(read_table(path, what="split file"))
    problems = _structure_problems(split_df)
    if problems:
        raise BrainmetsError(f"split file {path}: " + "; ".join(problems))
    return split_df[list(SPLIT_COLUMNS)].reset_index(drop=True)


def validate_split(
    split_df: "pandas.DataFrame",  # noqa: F821
    cases_df: "pandas.DataFrame",  # noqa: F821
    source: str = "split",
    on_bad_case: str = "fail",
) -> "pandas.DataFrame":  # noqa: F821
    """Check a given split against the case table and return it in case-table order.

    Every problem is collected and reported at once: unknown cases, cases the
    index skipped, duplicates, invalid split names, ``ok`` cases the split
    does not assign (a split must cover the whole indexed cohort, so that no
    case is silently left out), and empty splits. With ``on_bad_case="skip"``
    unknown, skipped and unassigned cases are warnings instead (see the module
    docstring); the rest must still fill every split.
    """
    split_df = _normalise(split_df)
    problems = _structure_problems(split_df)
    if problems and "missing column" in problems[0]:
        raise BrainmetsError(f"{source}: {problems[0]}")
    ids = cases_df["case"].astype(str).tolist()
    status = dict(zip(ids, cases_df["status"] if "status" in cases_df.columns else ["ok"] * len(ids)))
    reasons = dict(zip(ids, cases_df["reason"] if "reason" in cases_df.columns else [""] * len(ids)))
    listed = split_df["case"].tolist()
    tolerated: list[str] = []
    unknown = [c for c in dict.fromkeys(listed) if c not in status]
    if unknown:
        (tolerated if on_bad_case == "skip" else problems).append(
            f"{len(unknown)} listed case(s) not in the case table: {_list(unknown)} (not under the data root); "
            "data.on_bad_case: skip uses the listed rest")
    skipped = [c for c in dict.fromkeys(listed) if status.get(c, "ok") != "ok"]
    if skipped:
        detail = "; ".join(f"{reasons.get(c) or c}" for c in skipped[:5])
        (tolerated if on_bad_case == "skip" else problems).append(
            f"{len(skipped)} case(s) were skipped by `brainmets index` and cannot be used: "
            f"{_list(skipped)} ({detail})"
        )
    ok_cases = [c for c, s in status.items() if s == "ok"]
    listed_set = set(listed)
    absent = [c for c in ok_cases if c not in listed_set]
    if absent:
        (tolerated if on_bad_case == "skip" else problems).append(
            f"{len(absent)} indexed case(s) are not assigned to any split: {_list(absent)}; "
            "add them to the file (every indexed case must be in train, val or test)"
        )
    if tolerated:
        log.warning("%s: on_bad_case=skip, using the listed cases the index has:\n%s", source,
                    "\n".join(f"  - {t}" for t in tolerated))
        keep = split_df["case"].map(lambda c: status.get(c) == "ok")
        split_df = split_df[keep]
    present = set(split_df["split"])
    empty = [s for s in SPLITS if s not in present]
    if empty:
        problems.append(f"empty split(s): {', '.join(empty)}; every split needs at least one case")
    if problems:
        raise BrainmetsError(f"{source} is not valid:\n" + "\n".join(f"  - {p}" for p in problems))
    order = {c: i for i, c in enumerate(ok_cases)}
    result = split_df[list(SPLIT_COLUMNS)].copy()
    result = result.iloc[np.argsort([order[c] for c in result["case"]], kind="stable")]
    return result.reset_index(drop=True)


def cases_in_split(splits: "str | Path | pandas.DataFrame", split: str) -> list[str]:  # noqa: F821
    """Case ids assigned to ``split`` (from a splits file or table), in file order.

    Raises :class:`BrainmetsError` for an unknown split name or a split without cases.
    """
    if split not in SPLITS:
        raise BrainmetsError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if isinstance(splits, (str, Path)):
        source = str(splits)
        table = load_split(splits)
    else:
        source = "split table"
        table = _normalise(splits)
        problems = _structure_problems(table)
        if problems:
            raise BrainmetsError(f"{source}: " + "; ".join(problems))
    cases = table.loc[table["split"] == split, "case"].tolist()
    if not cases:
        raise BrainmetsError(f"split {split!r} in {source} has no cases")
    return cases


def create_split(
    cases_path: str | Path,
    out_path: str | Path,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    split_file: str | Path | None = None,
    on_bad_case: str = "fail",
) -> "pandas.DataFrame":  # noqa: F821
    """``brainmets split``: draw (or validate a given) split of the indexed cases and write it atomically."""
    from brainmets.data.layout import load_cases
    from brainmets.io import write_table

    cases_df = load_cases(cases_path, ok_only=False)
    if split_file is not None:
        split_df = validate_split(load_split(split_file), cases_df, source=f"split file {split_file}",
                                  on_bad_case=on_bad_case)
    else:
        split_df = make_split(cases_df, fractions, seed)
    write_table(split_df, out_path)
    return split_df


def split_summary(split_df: "pandas.DataFrame", cases_df: "pandas.DataFrame") -> "pandas.DataFrame":  # noqa: F821
    """Cases per split and metastasis-count stratum (rows: strata, columns: splits)."""
    import pandas as pd

    merged = split_df.merge(cases_df[["case", "n_lesions"]], on="case", how="left")
    merged["stratum"] = stratum_labels(merged["n_lesions"].astype(int))
    table = pd.crosstab(merged["stratum"], merged["split"]).reindex(columns=list(SPLITS), fill_value=0)
    order = {name: i for i, name in enumerate(_stratum_names())}
    table = table.loc[sorted(table.index, key=lambda s: order.get(s, len(order)))]
    table.loc["total"] = table.sum()
    return table


def _stratum_names(edges: Sequence[int] = STRATA_EDGES) -> list[str]:
    return [
        f"{lo}-{hi - 1}" if hi - 1 > lo else str(lo)
        for lo, hi in zip(edges[:-1], edges[1:])
    ] + [f">={edges[-1]}"]
