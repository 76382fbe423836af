"""`brainmets split`: sizes, stratification by metastasis count, determinism, user split files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmets.cli import main
from brainmets.data.layout import CASE_COLUMNS
from brainmets.data.splits import (
    _merge_small_strata,
    count_strata,
    cases_in_split,
    load_split,
    make_split,
    split_sizes,
    stratum_labels,
    validate_split,
)
from brainmets.errors import BrainmetsError


def synthetic_cases(n: int = 238, seed: int = 0, skipped: int = 0) -> pd.DataFrame:
    """A case table with a skewed metastasis count (most 1-3, a tail past 10), like BraTS-Mets."""
    rng = np.random.default_rng(seed)
    counts = np.minimum(rng.geometric(0.35, n) - (rng.random(n) < 0.1), 30)
    table = pd.DataFrame({column: [""] * n for column in CASE_COLUMNS})
    table["case"] = [f"BraTS-MET-{i:05d}-000" for i in range(n)]
    table["status"] = ["skipped" if i < skipped else "ok" for i in range(n)]
    for column in ("n_lesions", "n_netc", "n_snfh", "n_et"):
        table[column] = counts
    return table


def test_paper_split_sizes():
    assert split_sizes(238, (0.85, 0.05, 0.10)) == (202, 11, 25)
    assert split_sizes(30, (0.6, 0.2, 0.2)) == (18, 6, 6)
    assert split_sizes(10, (0.7, 0.1, 0.2)) == (7, 1, 2)  # 0.7 * 10 is 7.000000000000001 in floats


def test_every_requested_split_gets_a_case():
    assert split_sizes(5, (0.85, 0.05, 0.10)) == (3, 1, 1)
    assert split_sizes(3, (0.85, 0.05, 0.10)) == (1, 1, 1)
    assert split_sizes(4, (0.8, 0.2, 0.0)) == (3, 1, 0)
    with pytest.raises(BrainmetsError, match="cannot split 2 case"):
        split_sizes(2, (0.85, 0.05, 0.10))
    with pytest.raises(BrainmetsError, match="sum to 1"):
        split_sizes(100, (0.8, 0.1, 0.2))
    with pytest.raises(BrainmetsError, match="non-negative"):
        split_sizes(100, (1.1, -0.1, 0.0))


def test_default_split_of_238_cases_is_202_11_25():
    split = make_split(synthetic_cases(), seed=0)
    assert split["split"].value_counts().to_dict() == {"train": 202, "val": 11, "test": 25}
    assert split["case"].is_unique and len(split) == 238


def test_each_split_follows_the_overall_count_distribution():
    cases = synthetic_cases()
    assert set(stratum_labels(cases["n_lesions"])) == {"0-1", "2-3", "4-9", ">=10"}
    # Only 6 cases have >= 10 lesions: too few to give val (5%) one, so that bin joins 4-9.
    strata = pd.Series(count_strata(cases["n_lesions"]), index=cases["case"])
    overall = strata.value_counts(normalize=True)
    assert set(overall.index) == {"0-1", "2-3", ">=4"}
    for seed in range(5):
        split = make_split(cases, seed=seed)
        for name, members in split.groupby("split"):
            counts = strata[members["case"]].value_counts().reindex(overall.index, fill_value=0)
            expected = overall * len(members)
            # Proportional to within one case in every stratum (random draws miss by ~sqrt(n)).
            assert (counts - expected).abs().max() < 1.0, (seed, name, counts.to_dict(), expected.to_dict())


def test_split_is_deterministic_and_seed_dependent():
    cases = synthetic_cases()
    first = make_split(cases, seed=3)
    pd.testing.assert_frame_equal(first, make_split(cases, seed=3))
    assert not first["split"].equals(make_split(cases, seed=4)["split"])
    shuffled = cases.sample(frac=1.0, random_state=1)
    again = make_split(shuffled, seed=3).set_index("case")["split"]
    assert again.to_dict() == first.set_index("case")["split"].to_dict()  # row order does not matter


def test_only_ok_cases_are_split():
    cases = synthetic_cases(n=40, skipped=5)
    split = make_split(cases, fractions=(0.6, 0.2, 0.2), seed=0)
    assert len(split) == 35 and not set(split["case"]) & set(cases["case"][:5])


def test_small_strata_are_merged_into_their_smaller_neighbour():
    counts = [0] * 50 + [2] * 30 + [5] * 3 + [12] * 40
    assert sorted(set(count_strata(counts, (0.8, 0.1, 0.1)))) == ["0-1", "2-9", ">=10"]
    assert set(count_strata(counts, (0.96, 0.02, 0.02))) == {"0-1", ">=2"}
    assert _merge_small_strata([100, 3, 50, 25], 20) == [0, 1, 1, 2]
    assert _merge_small_strata([100, 0, 50, 25], 20) == [0, 1, 1, 2]
    assert _merge_small_strata([100, 30, 50, 2], 20) == [0, 1, 2, 2]
    assert _merge_small_strata([5, 3, 0, 2], 20) == [0, 0, 0, 0]


# ----------------------------------------------------------------- user split files


def _split_file(tmp_path, rows, name="user.tsv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["case", "split"]).to_csv(path, sep="," if name.endswith(".csv") else "\t", index=False)
    return path


def test_valid_user_split_file_csv(tmp_path):
    cases = synthetic_cases(n=6, skipped=1)
    rows = [(c, s) for c, s in zip(cases["case"][1:], ["test", "train", "train", "val", "train"])]
    split = validate_split(load_split(_split_file(tmp_path, rows, "user.csv")), cases)
    assert split["case"].tolist() == cases["case"][1:].tolist()  # case-table order
    assert cases_in_split(split, "val") == [cases["case"][4]]


def test_user_split_file_problems_are_all_reported(tmp_path):
    cases = synthetic_cases(n=6, skipped=1)
    ids = cases["case"].tolist()
    rows = [
        (ids[0], "train"),  # skipped by index
        (ids[1], "train"),
        (ids[1], "train"),  # duplicate
        (ids[2], "validation"),  # invalid name
        ("BraTS-MET-99999-000", "train"),  # unknown
        (ids[3], "train"),
        # ids[4] and ids[5] missing; no val, no test
    ]
    with pytest.raises(BrainmetsError) as info:
        validate_split(pd.DataFrame(rows, columns=["case", "split"]), cases)
    msg = str(info.value)
    assert "invalid split name(s) 'validation'" in msg
    assert f"listed more than once: {ids[1]}" in msg
    assert "not in the case table: BraTS-MET-99999-000" in msg
    assert f"skipped by `brainmets index` and cannot be used: {ids[0]}" in msg
    assert f"not assigned to any split: {ids[4]}, {ids[5]}" in msg
    assert "empty split(s): val, test" in msg


def test_load_split_structure_errors(tmp_path):
    path = tmp_path / "bad.tsv"
    pd.DataFrame({"case": ["a"], "fold": ["train"]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(BrainmetsError, match="missing column.*split"):
        load_split(path)
    with pytest.raises(BrainmetsError, match="split file not found"):
        load_split(tmp_path / "absent.tsv")
    with pytest.raises(BrainmetsError, match="unknown split 'dev'"):
        cases_in_split(pd.DataFrame({"case": ["a"], "split": ["train"]}), "dev")
    with pytest.raises(BrainmetsError, match="'test' in split table has no cases"):
        cases_in_split(pd.DataFrame({"case": ["a"], "split": ["train"]}), "test")


# ----------------------------------------------------------------- CLI


def test_cli_split_draws_and_validates(tmp_path, capsys):
    cases_path = tmp_path / "cases.tsv"
    synthetic_cases(n=30).to_csv(cases_path, sep="\t", index=False)
    out = tmp_path / "splits.tsv"
    args = ["split", "--cases", str(cases_path), "--out", str(out), "--fractions", "0.6", "0.2", "0.2"]
    assert main(args + ["--seed", "1"]) == 0
    assert "total" in capsys.readouterr().out
    drawn = load_split(out)
    assert drawn["split"].value_counts().to_dict() == {"train": 18, "val": 6, "test": 6}
    assert cases_in_split(out, "test") == drawn.loc[drawn["split"] == "test", "case"].tolist()

    copy = tmp_path / "copy.tsv"
    assert main(["split", "--cases", str(cases_path), "--out", str(copy), "--split-file", str(out)]) == 0
    assert load_split(copy).equals(drawn)

    user = _split_file(tmp_path, drawn.values[:-1].tolist())  # one case left out
    before = copy.read_bytes()
    assert main(["split", "--cases", str(cases_path), "--out", str(copy), "--split-file", str(user)]) == 2
    assert "not assigned to any split: " + drawn["case"].iloc[-1] in capsys.readouterr().err
    assert copy.read_bytes() == before


# ----------------------------------------------------------------- the paper's split


PAPER_SPLIT = Path(__file__).resolve().parents[2] / "configs" / "paper_split.tsv"


def _root_with(cases: list[str]) -> pd.DataFrame:
    table = synthetic_cases(n=len(cases))
    table["case"] = cases
    return table


def test_shipped_paper_split_is_the_authors_202_11_25():
    split = load_split(PAPER_SPLIT)
    assert split["split"].value_counts().to_dict() == {"train": 202, "val": 11, "test": 25}
    assert split["case"].str.fullmatch(r"BraTS-MET-\d{5}-000").all()


def test_paper_split_on_a_root_lacking_cases_fails_naming_them_or_skips_them(tmp_path, capsys):
    split = load_split(PAPER_SPLIT)
    lacking = [split["case"][3], split.loc[split["split"] == "test", "case"].iloc[0]]
    present = [c for c in split["case"] if c not in lacking]
    cases = _root_with(present)
    with pytest.raises(BrainmetsError) as info:
        validate_split(split, cases, source="paper split")
    assert f"2 listed case(s) not in the case table: {', '.join(lacking)} (not under the data root)" in str(info.value)

    kept = validate_split(split, cases, source="paper split", on_bad_case="skip")
    assert sorted(kept["case"]) == sorted(present)
    assert kept["split"].value_counts().to_dict() == {"train": 201, "val": 11, "test": 24}

    # the CLI (the workflow's split rule passes data.on_bad_case)
    cases_path, out = tmp_path / "cases.tsv", tmp_path / "splits.tsv"
    cases.to_csv(cases_path, sep="\t", index=False)
    base = ["split", "--cases", str(cases_path), "--out", str(out), "--split-file", str(PAPER_SPLIT)]
    assert main(base) == 2
    assert lacking[0] in capsys.readouterr().err
    assert main(base + ["--on-bad-case", "skip"]) == 0
    assert len(load_split(out)) == 236


def test_skip_still_needs_every_split_filled():
    split = load_split(PAPER_SPLIT)
    cases = _root_with(split.loc[split["split"] != "val", "case"].tolist())
    with pytest.raises(BrainmetsError, match="empty split\\(s\\): val"):
        validate_split(split, cases, on_bad_case="skip")
