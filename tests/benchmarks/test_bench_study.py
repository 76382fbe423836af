"""benchmarks/bench_study.py: how far two studies' Dice moved, against the first study's seed spread."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench_study():
    spec = importlib.util.spec_from_file_location("bench_study", REPO / "benchmarks" / "bench_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _write(results: Path, group: str, seed: int, split: str, rows: list[tuple[str, str, float, float]]) -> None:
    path = results / group / f"seed{seed}" / "metrics" / f"{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["case\tregion\tlegacy_dice\tlesion_dice"] + [f"{c}\t{r}\t{a}\t{b}" for c, r, a, b in rows]
    path.write_text("\n".join(lines) + "\n")


def test_moved_numbers_reports_mean_shift_abs_shift_and_seed_range(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    # group A: seeds 0.4 and 0.6 (range 20 points), after 0.5 and 0.7 (+10); group B: 0.8 / 0.8 -> 0.6 / 0.6 (-20)
    for seed, (a, b) in enumerate([(0.4, 0.5), (0.6, 0.7)]):
        _write(before, "modality/unet/t1c", seed, "test", [("c1", "WT", a, a), ("c2", "WT", a, "")])
        _write(after, "modality/unet/t1c", seed, "test", [("c1", "WT", b, b), ("c2", "WT", b, "")])
        _write(before, "baselines/segresnet/all", seed, "test", [("c1", "WT", 0.8, 0.8)])
        _write(after, "baselines/segresnet/all", seed, "test", [("c1", "WT", 0.6, 0.6)])
    # an ensemble's metrics have no seed directory and are not single runs: left out
    (before / "ensembles/x/mean/metrics").mkdir(parents=True)
    (before / "ensembles/x/mean/metrics/test.tsv").write_text("case\tregion\tlegacy_dice\tlesion_dice\nc1\tWT\t0\t0\n")

    lines = _bench_study().moved_numbers(before, after)

    assert lines[2] == "| test | 2 | -5.0 / -5.0 | 15.0 / 15.0 | 20.0 / 20.0 |", lines
    assert len(lines) == 3


def test_moved_numbers_of_identical_studies_is_zero(tmp_path):
    for seed in (0, 1, 2):
        _write(tmp_path / "a", "modality/unet/t2f", seed, "val", [("c1", "SNFH", 0.1 * seed, 0.2)])
        _write(tmp_path / "b", "modality/unet/t2f", seed, "val", [("c1", "SNFH", 0.1 * seed, 0.2)])
    lines = _bench_study().moved_numbers(tmp_path / "a", tmp_path / "b")
    assert lines[2] == "| val | 1 | +0.0 / +0.0 | 0.0 / 0.0 | 20.0 / 0.0 |", lines
