"""Holm correction and the paired Wilcoxon wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from brainmets.reporting.stats import holm, paired_wilcoxon, summarise_seeds


def test_holm_matches_hand_computation():
    # sorted: 0.01*4 = 0.04, 0.03*3 = 0.09, 0.04*2 = 0.08 -> 0.09 (monotone), 0.20*1 = 0.20
    adjusted = holm([0.01, 0.04, 0.03, 0.20])
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.20])


def test_holm_caps_at_one_and_keeps_nan_out_of_m():
    adjusted = holm([0.5, math.nan, 0.4])
    assert adjusted[0] == pytest.approx(min(1.0, max(0.8, 0.5)))
    assert math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.8)


def test_paired_wilcoxon_equals_scipy():
    ref = np.array([0.61, 0.72, 0.55, 0.80, 0.66, 0.59, 0.70])
    other = np.array([0.50, 0.75, 0.45, 0.71, 0.60, 0.61, 0.52])
    result = paired_wilcoxon(ref, other)
    expected = wilcoxon(ref, other)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.n_cases == 7
    assert result.mean_difference == pytest.approx(np.mean(ref - other))


def test_all_zero_differences_give_p_one():
    x = np.array([0.3, 0.4, 0.5])
    result = paired_wilcoxon(x, x.copy())
    assert result.p_value == 1.0 and result.statistic == 0.0
    assert "zero" in result.note


def test_nan_pairs_are_dropped():
    result = paired_wilcoxon(np.array([1.0, np.nan, 3.0, 4.0]), np.array([0.0, 1.0, np.nan, 2.0]))
    assert result.n_cases == 2


def test_single_seed_has_no_std():
    import pandas as pd

    mean, std, n = summarise_seeds(pd.DataFrame({"a": [0.5]}))
    assert n == 1 and mean["a"] == 0.5 and math.isnan(std["a"])


@pytest.mark.parametrize("n", [1, 3, 4, 5, 6, 8])
def test_wilcoxon_smallest_p_is_what_scipy_gives_on_same_sign_differences(n):
    from brainmets.reporting.stats import wilcoxon_smallest_p

    differences = np.arange(1, n + 1, dtype=float)
    assert wilcoxon_smallest_p(n) == pytest.approx(wilcoxon(differences).pvalue)
    assert wilcoxon_smallest_p(0) == 1.0
