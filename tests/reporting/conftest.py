"""A small but real results tree: TSV files with the documented columns, tiny NIfTI volumes.

Metric values follow closed formulas (below) so that tests can recompute
every expected number with plain Python loops, independently of pandas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SEEDS = (0, 1)
TEST_CASES = tuple(f"BraTS-MET-{i:05d}-000" for i in range(1, 7))
VAL_CASES = ("BraTS-MET-00101-000", "BraTS-MET-00102-000")
TRAIN_CASES = tuple(f"BraTS-MET-{i:05d}-000" for i in range(201, 205))
REGIONS = ("WT", "TC", "ET", "NETC", "SNFH")
REGION_OFFSET = {"WT": 0.10, "TC": 0.05, "ET": 0.0, "NETC": -0.10, "SNFH": 0.02}
CASE_OFFSET = (0.00, 0.13, 0.05, 0.21, 0.08, 0.17)
ALL_FOUR = "t1c+t1n+t2f+t2w"
SELECTED_SUBSET = "t1c+t2f"
#: Number of metastases per test case (n_lesions in cases.tsv): case 4 has most.
TEST_LESION_COUNTS = (1, 3, 2, 12, 1, 4)
SHAPE = (16, 16, 8)

# Run identity -> (lesion-Dice base on val, on test, lesion-HD95 base, noise factor).
# Modality study: on val t1c+t2f is best by Dice, t2f best by HD95; on test t1c is best by Dice.
RUNS = {
    ("modality", "unet", "t1c"): dict(val=0.50, test=0.70, hd=5.0, noise=1),
    ("modality", "unet", "t2f"): dict(val=0.30, test=0.30, hd=3.0, noise=2),
    ("modality", "unet", "t1c+t2f"): dict(val=0.60, test=0.60, hd=8.0, noise=3),
    # Table 2: two-stage (selected) best Dice, segresnet second (mean noise: f=6 0.053, f=5 0.05,
    # f=1 0.06, f=4 0); segresnet best (lowest) HD95, unet second.
    ("baselines", "unet", ALL_FOUR): dict(val=0.40, test=0.40, hd=4.0, noise=4),
    ("baselines", "segresnet", ALL_FOUR): dict(val=0.45, test=0.60, hd=2.0, noise=5),
    ("twostage", "combined", "selected"): dict(val=0.60, test=0.62, hd=6.0, noise=6),
    # All four: legacy Dice identical to the selected model on every case (all-zero differences).
    ("twostage", "combined", ALL_FOUR): dict(val=0.55, test=0.55, hd=7.0, noise=1, legacy_as="selected"),
}
MODEL_INFO = {
    "unet": dict(parameters=1_500_000, gmac_per_window=12.5, patch=[32, 32, 32]),
    "segresnet": dict(parameters=1_200_000, gmac_per_window=9.0, patch=[32, 32, 32]),
    "detector": dict(parameters=300_000, gmac_per_window=0.7, patch=[32, 32, 32]),
    "segmentor": dict(parameters=2_000_000, gmac_per_window=6.0, patch=[32, 32, 32]),
}
#: Lesion volumes (mm^3) of every test case's WT GT lesions; the last one is not counted.
LESION_VOLUMES = (5.0, 50.0, 500.0, 5000.0, 8.0)


def noise(factor: int, case_index: int) -> float:
    return ((case_index * (factor + 3)) % 7) / 50.0


def lesion_dice(run: tuple, split: str, seed: int, case_index: int, region: str) -> float:
    spec = RUNS[run]
    return (spec[split] + 0.01 * seed + CASE_OFFSET[case_index] + REGION_OFFSET[region]
            + noise(spec["noise"], case_index) - 0.2)


def legacy_dice(run: tuple, split: str, seed: int, case_index: int, region: str) -> float:
    source = ("twostage", "combined", RUNS[run]["legacy_as"]) if "legacy_as" in RUNS[run] else run
    return lesion_dice(source, split, seed, case_index, region) + 0.05


def lesion_hd95(run: tuple, split: str, seed: int, case_index: int, region: str) -> float:
    return RUNS[run]["hd"] + seed + 2 * CASE_OFFSET[case_index] + (3 if split == "test" else 0)


def legacy_hd95(run: tuple, split: str, seed: int, case_index: int, region: str) -> float:
    return lesion_hd95(run, split, seed, case_index, region) / 2


def num_fp(seed: int, case_index: int) -> int:
    return case_index % 3 + seed


def detected(seed: int, case_index: int, lesion_index: int) -> bool:
    return (seed == 0, True, case_index % 2 == 0, True, False)[lesion_index]


METRICS = {"lesion_dice": lesion_dice, "legacy_dice": legacy_dice, "lesion_hd95": lesion_hd95,
           "legacy_hd95": legacy_hd95}


def _write_tsv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def _cases(split: str) -> tuple[str, ...]:
    return TEST_CASES if split == "test" else VAL_CASES


def _nifti(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


def _label_volume(shift: int) -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[4 + shift:10 + shift, 4:10, 3:6] = 2
    seg[5 + shift:9 + shift, 5:9, 4] = 3
    seg[6 + shift:8 + shift, 6:8, 4] = 1
    return seg


def write_run(run_dir: Path, run: tuple, model_for_info: str | None) -> None:
    seed = int(run_dir.name[len("seed"):])
    for split in ("val", "test"):
        rows = []
        for ci, case in enumerate(_cases(split)):
            for region in REGIONS:
                vals = {m: f(run, split, seed, ci, region) for m, f in METRICS.items()}
                rows.append([case, region, vals["legacy_dice"], vals["legacy_hd95"], vals["lesion_dice"],
                             vals["lesion_hd95"], 1, num_fp(seed, ci), 0, 1000.0, 900.0])
        _write_tsv(run_dir / "metrics" / f"{split}.tsv",
                   ["case", "region", "legacy_dice", "legacy_hd95", "lesion_dice", "lesion_hd95",
                    "num_tp", "num_fp", "num_fn", "gt_volume", "pred_volume"], rows)
        lesion_rows = []
        for ci, case in enumerate(_cases(split)):
            for li, volume in enumerate(LESION_VOLUMES):
                lesion_rows.append([case, "WT", li + 1, "gt", volume, detected(seed, ci, li), 0.5, 2.0,
                                    li < len(LESION_VOLUMES) - 1])
            lesion_rows.append([case, "WT", 99, "fp", 30.0, False, 0.0, 10.0, True])
            # A TC lesion that must not leak into the WT rows.
            lesion_rows.append([case, "TC", 1, "gt", 5.0, False, 0.0, 10.0, True])
        _write_tsv(run_dir / "metrics" / f"{split}_lesions.tsv",
                   ["case", "region", "lesion_id", "kind", "volume", "detected", "dice", "hd95", "counted"],
                   lesion_rows)
        inf_rows = [[case, 1.0 + 0.1 * ci + 0.5 * seed, 8, 4 if run[0] == "twostage" else 8,
                     0.5 if run[0] == "twostage" else 1.0, 2e9 + 1e8 * ci, 4e9]
                    for ci, case in enumerate(_cases(split))]
        _write_tsv(run_dir / "inference" / f"{split}.tsv",
                   ["case", "seconds", "windows_total", "windows_kept", "fraction_kept", "flops", "flops_single_pass"],
                   inf_rows)
    if model_for_info:
        write_training(run_dir, model_for_info)


def write_training(run_dir: Path, model: str) -> None:
    seed = int(run_dir.name[4:])
    _write_tsv(run_dir / "history.tsv", ["iteration", "loss", "lr", "seconds", "val_lesion_dice"],
               [[it, 1.0 / (1 + it) + 0.01 * seed, 0.01, it * 0.5, 0.1 * it] for it in (0, 10, 20, 30)])
    (run_dir / "model_info.json").write_text(json.dumps(MODEL_INFO[model]))


@dataclass
class FakeResults:
    root: Path
    results: Path
    config: Path
    qualitative_case: str
    seeds: tuple = SEEDS
    test_cases: tuple = TEST_CASES
    extra: dict = field(default_factory=dict)


def build_results(tmp_path: Path) -> FakeResults:
    results = tmp_path / "results"
    cohort = tmp_path / "cohort"
    # Cohort index and split.
    case_rows, split_rows = [], []
    rng = np.random.default_rng(0)
    counts = {**dict(zip(TEST_CASES, TEST_LESION_COUNTS)), VAL_CASES[0]: 2, VAL_CASES[1]: 15,
              **{c: i + 1 for i, c in enumerate(TRAIN_CASES)}}
    splits = {**{c: "test" for c in TEST_CASES}, **{c: "val" for c in VAL_CASES}, **{c: "train" for c in TRAIN_CASES}}
    qualitative = TEST_CASES[int(np.argmax(TEST_LESION_COUNTS))]
    for case, n in counts.items():
        t1c = cohort / case / f"{case}-t1c.nii.gz"
        seg = cohort / case / f"{case}-seg.nii.gz"
        if case == qualitative:
            _nifti(t1c, rng.normal(100, 10, SHAPE).astype(np.float32))
            _nifti(seg, _label_volume(0))
        case_rows.append([case, "ok", "", cohort, "", t1c, "", "", seg, "16x16x8", "2.0x2.0x2.0", n])
        split_rows.append([case, splits[case]])
    case_rows.append(["BraTS-MET-09999-000", "skipped", "t2f missing", cohort, "", "", "", "", "", "", "", 0])
    _write_tsv(results / "data" / "cases.tsv",
               ["case", "status", "reason", "root", "t1n", "t1c", "t2w", "t2f", "seg", "shape", "spacing", "n_lesions"],
               case_rows)
    _write_tsv(results / "data" / "splits.tsv", ["case", "split"], split_rows)

    for run in RUNS:
        study, model, subset = run
        for seed in SEEDS:
            run_dir = results / study / model / subset / f"seed{seed}"
            write_run(run_dir, run, None if study == "twostage" else model)
            if study != "modality":
                _nifti(run_dir / "predictions" / "test" / f"{qualitative}.nii.gz", _label_volume(seed + 1))
            if study == "twostage":
                for part in ("detector", "segmentor"):
                    write_training(results / "twostage" / part / subset / f"seed{seed}", part)
    (results / "selection").mkdir(parents=True)
    (results / "selection" / "modality.json").write_text(json.dumps({"chosen_subset": SELECTED_SUBSET}))
    config = tmp_path / "config.yaml"
    config.write_text(
        "seeds: [0, 1]\n"
        "models:\n"
        "  unet: {arch: dynunet, patch: [16, 16, 16]}\n"
        "  segresnet: {arch: segresnet, patch: [16, 16, 16]}\n"
        "  detector: {arch: densenet121, patch: [16, 16, 16]}\n"
        "  segmentor: {arch: dynunet, patch: [16, 16, 16]}\n"
        "modality_study: {model: unet, subsets: [t1c, t2f, t1c+t2f]}\n"
        "twostage: {detector: detector, segmentor: segmentor, subsets: [selected, all]}\n"
        "baselines: {models: [unet, segresnet], subset: all}\n"
    )
    return FakeResults(tmp_path, results, config, qualitative)


@pytest.fixture
def fake_results(tmp_path: Path) -> FakeResults:
    return build_results(tmp_path)


@pytest.fixture(scope="module")
def shared_results(tmp_path_factory) -> FakeResults:
    """A results tree shared by the tests of one module that only read it."""
    return build_results(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def spec():
    """This module: the formulas behind the fake results, for computing expectations."""
    import sys

    return sys.modules[__name__]
