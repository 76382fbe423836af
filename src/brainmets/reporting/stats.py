"""Aggregation over cases and seeds, and paired significance tests.

Convention (as in the paper): a model's score is computed *per seed* first
(mean over the split's cases), then summarised as mean and standard
deviation across seeds. The standard deviation is the sample one
(``ddof=1``); with a single seed it is undefined (NaN) and tables print the
mean alone. An "avg" column is the mean of its regions *within each seed*,
then summarised across seeds, so its std is the spread of the seed averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainmets.errors import BrainmetsError

#: Metrics where a smaller value is better.
LOWER_IS_BETTER = frozenset({"legacy_hd95", "lesion_hd95"})
SCORE_METRICS = ("legacy_dice", "lesion_dice", "legacy_hd95", "lesion_hd95")


def direction(metric: str) -> str:
    """``"max"`` or ``"min"``: how the metric is optimised."""
    if metric not in SCORE_METRICS:
        raise BrainmetsError(f"unknown metric {metric!r}; choose one of {', '.join(SCORE_METRICS)}")
    return "min" if metric in LOWER_IS_BETTER else "max"


def per_seed_region_means(metrics: pd.DataFrame, metric: str, regions: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Seed x region table of the mean over cases (NaN cases skipped).

    ``metrics`` holds ``seed, case, region, <metric>`` rows (see
    :func:`brainmets.reporting.collect.read_metrics`).
    """
    part = metrics[metrics["region"].isin(regions)]
    table = part.pivot_table(index="seed", columns="region", values=metric, aggfunc="mean", dropna=False)
    return table.reindex(columns=list(regions))


def with_average(per_seed: pd.DataFrame, average_of: list[str] | tuple[str, ...], name: str = "avg") -> pd.DataFrame:
    """Add a column: the per-seed mean of ``average_of`` columns."""
    out = per_seed.copy()
    out[name] = per_seed[list(average_of)].mean(axis=1)
    return out


def summarise_seeds(per_seed: pd.DataFrame) -> tuple[pd.Series, pd.Series, int]:
    """Mean, sample std (ddof=1; NaN for one seed) and number of seeds of each column."""
    n = len(per_seed)
    std = per_seed.std(axis=0, ddof=1) if n > 1 else pd.Series(np.nan, index=per_seed.columns)
    return per_seed.mean(axis=0), std, n


def holm(pvalues: list[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    With m p-values sorted ascending, the i-th (0-based) is multiplied by
    (m - i); adjusted values are made non-decreasing along the sorted order.
    NaN inputs stay NaN and do not count towards m.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        adjusted[idx] = running
    return adjusted


def wilcoxon_smallest_p(n_pairs: int) -> float:
    """Smallest two-sided p the exact signed-rank test can give on ``n_pairs`` non-zero differences.

    Reached when every difference has the same sign: each of the 2^n sign
    patterns is equally likely under the null, and two of them are that
    extreme, so p = 2 / 2^n (1 with no pairs).
    """
    return min(1.0, 2.0 ** (1 - n_pairs)) if n_pairs > 0 else 1.0


@dataclass(frozen=True)
class PairedTest:
    n_cases: int
    mean_reference: float
    mean_other: float
    mean_difference: float
    median_difference: float
    statistic: float
    p_value: float
    note: str


def paired_wilcoxon(reference: np.ndarray, other: np.ndarray) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test on paired per-case values.

    Zero differences are dropped (Wilcoxon's original convention, scipy's
    ``zero_method="wilcox"``). When every difference is zero the models are
    indistinguishable on these cases: statistic 0, p = 1 (scipy would return
    NaN). Pairs with a NaN on either side are dropped.
    """
    from scipy.stats import wilcoxon

    reference = np.asarray(reference, dtype=float)
    other = np.asarray(other, dtype=float)
    keep = ~(np.isnan(reference) | np.isnan(other))
    reference, other = reference[keep], other[keep]
    n = int(len(reference))
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, "no paired cases")
    diff = reference - other
    base = dict(
        n_cases=n,
        mean_reference=float(reference.mean()),
        mean_other=float(other.mean()),
        mean_difference=float(diff.mean()),
        median_difference=float(np.median(diff)),
    )
    if np.all(diff == 0):
        return PairedTest(**base, statistic=0.0, p_value=1.0, note="all differences zero")
    result = wilcoxon(reference, other, zero_method="wilcox", alternative="two-sided")
    n_zero = int(np.sum(diff == 0))
    note = f"{n_zero} zero difference(s) dropped" if n_zero else ""
    return PairedTest(**base, statistic=float(result.statistic), p_value=float(result.pvalue), note=note)
