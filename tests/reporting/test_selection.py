"""Subset selection: score definition, direction, override and the test-split rule."""

from __future__ import annotations

import json
import statistics

import pytest

from brainmets.cli import main
from brainmets.errors import BrainmetsError
from brainmets.reporting.selection import select_subset

SUBSETS = ("t1c", "t2f", "t1c+t2f", "t1c+t1n+t2f+t2w")


def expected_scores(spec, metric: str, split: str, regions: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Mean and sample std over seeds of (mean over regions of (mean over cases)), by plain loops."""
    cases = spec.TEST_CASES if split == "test" else spec.VAL_CASES
    out = {}
    for subset in SUBSETS:
        run = ("modality", "unet", subset)
        per_seed = [
            statistics.mean(
                statistics.mean(spec.METRICS[metric](run, split, seed, ci, r) for ci in range(len(cases)))
                for r in regions
            )
            for seed in spec.SEEDS
        ]
        out[subset] = (statistics.mean(per_seed), statistics.stdev(per_seed))
    return out


def test_default_selection_picks_best_mean_lesion_dice_on_val(fake_results, spec):
    decision = select_subset(fake_results.results, regions=("WT", "TC", "ET"))
    expected = expected_scores(spec, "lesion_dice", "val", ("WT", "TC", "ET"))
    best = max(expected, key=lambda k: expected[k][0])
    assert best == "t1c+t2f"  # the fixture is built so; guards the fixture itself
    assert decision["chosen_subset"] == best
    assert decision["direction"] == "max" and decision["split"] == "val" and decision["override"] is None
    assert decision["warning"] is None
    assert [r["subset"] for r in decision["ranking"]] == sorted(expected, key=lambda k: -expected[k][0])
    for row in decision["ranking"]:
        mean, std = expected[row["subset"]]
        assert row["mean"] == pytest.approx(mean)
        assert row["std"] == pytest.approx(std)
        assert row["n_seeds"] == 2


def test_hd95_is_minimised(fake_results, spec):
    decision = select_subset(fake_results.results, metric="lesion_hd95")
    expected = expected_scores(spec, "lesion_hd95", "val", ("WT", "TC", "ET"))
    assert decision["direction"] == "min"
    assert decision["chosen_subset"] == min(expected, key=lambda k: expected[k][0]) == "t2f"
    assert decision["ranking"][-1]["subset"] == "t1c+t2f"  # highest HD95 last


def test_regions_change_the_score(fake_results, spec):
    decision = select_subset(fake_results.results, regions=("NETC",))
    expected = expected_scores(spec, "lesion_dice", "val", ("NETC",))
    assert decision["regions"] == ["NETC"]
    for row in decision["ranking"]:
        assert row["mean"] == pytest.approx(expected[row["subset"]][0])


def test_override_is_recorded_and_ranking_still_written(fake_results):
    decision = select_subset(fake_results.results, override="t2f+t1c")
    assert decision["override"] == decision["chosen_subset"] == "t1c+t2f"  # canonicalised
    decision = select_subset(fake_results.results, override="t2f")
    assert decision["chosen_subset"] == "t2f"
    assert decision["override"] == "t2f"
    assert decision["ranking"][0]["subset"] == "t1c+t2f"  # what the data would have chosen
    assert len(decision["ranking"]) == len(SUBSETS)


def test_test_split_requires_explicit_permission(fake_results, spec, caplog):
    with pytest.raises(BrainmetsError, match="allow-test"):
        select_subset(fake_results.results, split="test")
    decision = select_subset(fake_results.results, split="test", allow_test=True)
    assert decision["split"] == "test"
    assert "TEST" in decision["warning"]
    assert any("TEST" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    expected = expected_scores(spec, "lesion_dice", "test", ("WT", "TC", "ET"))
    assert decision["chosen_subset"] == max(expected, key=lambda k: expected[k][0]) == "t1c"


def test_missing_metric_files_are_all_named(fake_results):
    for seed in (0, 1):
        (fake_results.results / "modality" / "unet" / "t2f" / f"seed{seed}" / "metrics" / "val.tsv").unlink()
    with pytest.raises(BrainmetsError) as info:
        select_subset(fake_results.results)
    message = str(info.value)
    assert "t2f/seed0/metrics/val.tsv" in message and "t2f/seed1/metrics/val.tsv" in message


def test_cli_writes_decision_and_refuses_test(fake_results, capsys):
    out = fake_results.root / "selection.json"
    rc = main(["select", "--results", str(fake_results.results), "--metric", "lesion_dice", "--split", "val",
               "--regions", "WT", "TC", "ET", "--out", str(out)])
    assert rc == 0
    decision = json.loads(out.read_text())
    assert decision["chosen_subset"] == "t1c+t2f"
    keys = {"chosen_subset", "metric", "split", "regions", "direction", "override", "ranking", "timestamp"}
    assert keys <= set(decision)
    rc = main(["select", "--results", str(fake_results.results), "--split", "test", "--out", str(out)])
    assert rc == 2
    assert "allow-test" in capsys.readouterr().err
