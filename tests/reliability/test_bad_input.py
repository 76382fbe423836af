"""Bad input, end to end: through the `brainmets` commands a user types and through Snakemake.

The module tests check each problem where it is found (tests/data_layout, ...);
here every problem goes through a real process and must come out as a user
error: a message naming the case, the file, what was expected and what to do;
exit status 2; no Python traceback; and the results that were there before
left byte-identical.

Through Snakemake, "no traceback" means: the failing job's log file holds the
`brainmets <verb>: error:` message and no traceback, and Snakemake's own output
names the failing rule and that log file and holds no Python traceback either
(its `RuleException` / `WorkflowError` summary lines are Snakemake's report, not a
crash). Snakemake itself deletes the outputs of the job it is about to rerun
(they would be stale); every other result stays byte-identical.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from reliability_helpers import (  # registered by conftest.py
    assert_user_error,
    clone_case,
    digests,
    full_config,
    run_cli,
    run_snakemake,
    workflow_config,
)

GOOD = "BraTS-MET-00001-000"


# --------------------------------------------------------------------------- the fault catalogue


def _load(path: Path):
    image = nib.load(path)
    return np.asanyarray(image.dataobj), image.affine


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, affine), path)


def _file(case_dir: Path, suffix: str) -> Path:
    return case_dir / f"{case_dir.name}-{suffix}.nii.gz"


def missing_sequence(case_dir: Path) -> None:
    _file(case_dir, "t2f").unlink()


def wrong_file_names(case_dir: Path) -> None:
    _file(case_dir, "t2f").rename(case_dir / f"{case_dir.name}_flair.nii.gz")


def corrupt_gzip(case_dir: Path) -> None:
    path = _file(case_dir, "t1c")
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    path.write_bytes(bytes(raw))


def truncated_gzip(case_dir: Path) -> None:
    path = _file(case_dir, "t1n")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # an interrupted download


def shape_mismatch(case_dir: Path) -> None:
    data, affine = _load(_file(case_dir, "t2w"))
    _save(_file(case_dir, "t2w"), np.ascontiguousarray(data[:, :, :-1]), affine)


def affine_mismatch(case_dir: Path) -> None:
    data, affine = _load(_file(case_dir, "t2w"))
    shifted = affine.copy()
    shifted[0, 3] += 2.0  # registered 2 mm off
    _save(_file(case_dir, "t2w"), data, shifted)


def labels_outside(case_dir: Path) -> None:
    seg, affine = _load(_file(case_dir, "seg"))
    seg = seg.astype(np.uint8)
    seg[:2, :2, :2] = 5
    _save(_file(case_dir, "seg"), seg, affine)


def nan_intensities(case_dir: Path) -> None:
    data, affine = _load(_file(case_dir, "t1c"))
    data = data.astype(np.float32)
    data[30, 30, 18:21] = np.nan
    _save(_file(case_dir, "t1c"), data, affine)


def inf_intensities(case_dir: Path) -> None:
    data, affine = _load(_file(case_dir, "t1n"))
    data = data.astype(np.float32)
    data[30, 30, 20] = np.inf
    _save(_file(case_dir, "t1n"), data, affine)


def all_zero_sequence(case_dir: Path) -> None:
    data, affine = _load(_file(case_dir, "t2f"))
    _save(_file(case_dir, "t2f"), np.zeros_like(data), affine)


#: name -> (how the case is broken, what the message must say besides the case id).
#: ``{case}`` in a needle is replaced by the broken case's id.
FAULTS: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "missing_sequence": (missing_sequence, ("missing t2f", "expected {case}-t2f.nii.gz", "found {case}-seg.nii.gz")),
    "wrong_file_names": (wrong_file_names, ("missing t2f", "{case}_flair.nii.gz looks like the t2f file",
                                            "rename it to {case}-t2f.nii.gz")),
    "corrupt_gzip": (corrupt_gzip, ("{case}-t1c.nii.gz", "gzip", "truncated or corrupt, copy it again")),
    "truncated_gzip": (truncated_gzip, ("{case}-t1n.nii.gz", "gzip", "truncated or corrupt, copy it again")),
    "shape_mismatch": (shape_mismatch, ("{case}-t2w.nii.gz", "shape 60x60x38 differs",
                                        "expected all sequences and the segmentation on the same voxel grid")),
    "affine_mismatch": (affine_mismatch, ("{case}-t2w.nii.gz", "affine differs",
                                          "same orientation, origin and spacing")),
    "labels_outside": (labels_outside, ("{case}-seg.nii.gz", "label values 5 (8 voxels) outside {0, 1, 2, 3}",
                                        "expected integer labels 0 background")),
    "nan_intensities": (nan_intensities, ("{case}-t1c.nii.gz", "non-finite intensities: 3 NaN voxels",
                                          "expected finite values")),
    "inf_intensities": (inf_intensities, ("{case}-t1n.nii.gz", "1 Inf voxel", "expected finite values")),
    "all_zero_sequence": (all_zero_sequence, ("{case}-t2f.nii.gz", "all voxels are zero",
                                              "the sequence is empty")),
}
#: Advice every failed index ends with.
INDEX_ADVICE = "fix these files, or index the other cases with --on-bad-case skip"


def broken_case_id(number: int) -> str:
    return f"BraTS-MET-{900 + number:05d}-000"


def make_cohort(good_root: Path, dst: Path, faults: list[str], good_cases: list[str]) -> dict[str, str]:
    """Copy ``good_cases`` into ``dst`` and add one broken clone of the first good case per fault.

    Returns {fault: broken case id}.
    """
    dst.mkdir(parents=True)
    for case in good_cases:
        shutil.copytree(good_root / case, dst / case)
    broken = {}
    for number, fault in enumerate(faults, start=1):
        case = broken_case_id(number)
        FAULTS[fault][0](clone_case(good_root, GOOD, dst, case))
        broken[fault] = case
    return broken


def needles(fault: str, case: str) -> list[str]:
    return [case] + [n.replace("{case}", case) for n in FAULTS[fault][1]]


@pytest.fixture(scope="module")
def earlier_cases(cohort, tmp_path_factory) -> Path:
    """A cases.tsv from an earlier, successful `brainmets index` (the result a failing run must keep)."""
    from brainmets.data.layout import index_cohort
    from brainmets.io import write_table

    path = tmp_path_factory.mktemp("earlier") / "cases.tsv"
    write_table(index_cohort(cohort, progress=False), path)
    return path


# --------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize("fault", list(FAULTS))
def test_index_names_the_case_the_file_and_the_fix_and_keeps_the_earlier_table(
        fault, cohort, earlier_cases, tmp_path):
    broken = make_cohort(cohort, tmp_path / "cohort", [fault], [GOOD])[fault]
    out = tmp_path / "results" / "data" / "cases.tsv"
    out.parent.mkdir(parents=True)
    shutil.copy2(earlier_cases, out)
    before = digests(out.parent)

    proc = run_cli("index", "--root", tmp_path / "cohort", "--out", out, "--no-progress")

    err = assert_user_error(proc, "index", "1 of 2 cases", *needles(fault, broken), INDEX_ADVICE)
    assert GOOD not in err.split("failed validation")[1], "the good case was reported as bad"
    assert digests(out.parent) == before, "the earlier cases.tsv was changed or a partial file was left"


def test_index_with_skip_keeps_the_good_cases_and_lists_every_bad_one(cohort, tmp_path):
    broken = make_cohort(cohort, tmp_path / "cohort", list(FAULTS), [GOOD])
    out = tmp_path / "cases.tsv"

    proc = run_cli("index", "--root", tmp_path / "cohort", "--out", out, "--on-bad-case", "skip",
                   "--no-progress")

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    table = pd.read_csv(out, sep="\t").set_index("case")
    assert table.loc[GOOD, "status"] == "ok"
    for fault, case in broken.items():
        assert table.loc[case, "status"] == "skipped", fault
        for needle in needles(fault, case)[1:]:
            assert needle in table.loc[case, "reason"], (fault, table.loc[case, "reason"])


@pytest.mark.parametrize("fault", ["truncated_gzip", "nan_intensities", "missing_sequence"])
def test_preprocess_of_a_file_broken_after_indexing_fails_per_case_and_keeps_the_cache(
        fault, cohort, tmp_path):
    """A file changed after `index` (a re-download, a sync): preprocess names it, other cases are cached."""
    from brainmets.data.layout import index_cohort
    from brainmets.io import write_table

    root = tmp_path / "cohort"
    make_cohort(cohort, root, [], [GOOD, "BraTS-MET-00002-000"])
    cases = tmp_path / "cases.tsv"
    write_table(index_cohort(root, progress=False), cases)
    cache = tmp_path / "cache"
    first = run_cli("preprocess", "--cases", cases, "--out-dir", cache, "--case", GOOD)
    assert first.returncode == 0, first.stderr
    before = digests(cache)

    bad = "BraTS-MET-00002-000"
    FAULTS[fault][0](root / bad)
    proc = run_cli("preprocess", "--cases", cases, "--out-dir", cache)

    file = {"truncated_gzip": "t1n", "nan_intensities": "t1c", "missing_sequence": "t2f"}[fault]
    assert_user_error(proc, "preprocess", "1 of 2 cases failed to preprocess", bad, f"{bad}-{file}.nii.gz",
                      "brainmets index")
    assert digests(cache) == before, "the cached case was changed or the broken case left files"


def test_unknown_modality_in_the_config_or_on_the_command_line(trained, tmp_path):
    out = tmp_path / "run"
    config = full_config(tmp_path / "config.yaml",
                         modality_study={"model": "unet", "subsets": ["t1c", "t1c+dwi"]})
    common = ["--study", "modality", "--model", "unet", "--seed", "0", "--cache", trained.cache,
              "--splits", trained.splits, "--out-dir", out]

    proc = run_cli("train", "--config", config, "--subset", "t1c", *common)
    assert_user_error(proc, "train", "invalid configuration", str(config), "modality_study.subsets[1]",
                      "unknown modality 'dwi'", "expected a subset of t1n, t1c, t2w, t2f")

    proc = run_cli("train", "--config", trained.config, "--subset", "t1c+dwi", *common)
    assert_user_error(proc, "train", "unknown modality 'dwi'", "expected a subset of t1n, t1c, t2w, t2f")
    assert not out.exists(), "a run directory was created for an invalid request"


def test_split_file_naming_unknown_cases_keeps_the_earlier_split(trained, tmp_path):
    out = tmp_path / "splits.tsv"
    shutil.copy2(trained.splits, out)
    before = out.read_bytes()
    split_file = tmp_path / "my_split.tsv"
    rows = pd.read_csv(trained.splits, sep="\t")
    rows.loc[len(rows)] = ["BraTS-MET-99999-000", "test"]
    rows.to_csv(split_file, sep="\t", index=False)

    proc = run_cli("split", "--cases", trained.cases, "--out", out, "--split-file", split_file)

    assert_user_error(proc, "split", str(split_file), "1 listed case(s) not in the case table: BraTS-MET-99999-000")
    assert out.read_bytes() == before


def _predictions_from_ground_truth(root: Path, cases: list[str], pred_dir: Path) -> None:
    """Perfect predictions: each case's segmentation copied to <pred_dir>/<case>.nii.gz."""
    pred_dir.mkdir(parents=True)
    for case in cases:
        shutil.copy2(root / case / f"{case}-seg.nii.gz", pred_dir / f"{case}.nii.gz")


def test_evaluate_with_a_missing_prediction_keeps_the_earlier_metrics(cohort, trained, tmp_path):
    test = pd.read_csv(trained.splits, sep="\t").query("split == 'test'")["case"].tolist()
    assert len(test) >= 2
    pred_dir = tmp_path / "predictions" / "test"
    _predictions_from_ground_truth(cohort, test, pred_dir)
    metrics = tmp_path / "metrics"
    args = ["evaluate", "--pred-dir", pred_dir, "--gt-dir", cohort, "--cases-from", trained.splits,
            "--split", "test", "--out", metrics / "test.tsv", "--lesions-out", metrics / "test_lesions.tsv"]
    assert run_cli(*args).returncode == 0
    before = digests(metrics)

    (pred_dir / f"{test[1]}.nii.gz").unlink()
    proc = run_cli(*args)

    assert_user_error(proc, "evaluate", test[1], "prediction missing", str(pred_dir / f"{test[1]}.nii.gz"),
                      "--missing-as-empty")
    assert digests(metrics) == before


# --------------------------------------------------------------------------- through Snakemake


def _assert_failed_rule(run, rule: str, log: Path, *message: str, verb: str | None = None) -> str:
    """Snakemake failed in ``rule``, named its log; the log holds the brainmets message (of ``verb``,
    default the rule's name), no traceback."""
    out = run.stdout
    assert run.returncode != 0, out
    assert f"Error in rule {rule}:" in out, out
    assert "Traceback" not in out, f"snakemake printed a traceback:\n{out}"
    text = log.read_text()
    assert "Traceback" not in text, text
    assert f"brainmets {verb or rule}: error:" in text, text
    for needle in message:
        assert needle in text, f"{needle!r} not in {log}:\n{text}"
    return text


def test_snakemake_reports_every_bad_case_and_keeps_earlier_results(cohort, tmp_path):
    """Index failure: the rule log lists all bad cases; split failure with an unknown case; a bad config."""
    work = tmp_path / "work"
    results = work / "results"
    good = workflow_config(tmp_path / "good.yaml", cohort)
    first = run_snakemake(work, "--configfile", good, "--cores", "1", "results/data/splits.tsv")
    assert first.returncode == 0, first.stdout
    splits_before = (results / "data" / "splits.tsv").read_bytes()

    # 1. a cohort with every kind of broken case: index fails and lists them all
    broken_root = tmp_path / "broken"
    broken = make_cohort(cohort, broken_root, list(FAULTS), [GOOD])
    bad_cohort = workflow_config(tmp_path / "bad_cohort.yaml", broken_root)
    run = run_snakemake(work, "--configfile", bad_cohort, "--cores", "1", "results/data/splits.tsv")
    log = results / "logs" / "data" / "index.log"
    assert "results/logs/data/index.log" in run.stdout
    text = _assert_failed_rule(run, "index", log, f"{len(FAULTS)} of {len(FAULTS) + 1} cases", INDEX_ADVICE)
    for fault, case in broken.items():
        for needle in needles(fault, case):
            assert needle in text, (fault, needle)
    assert (results / "data" / "splits.tsv").read_bytes() == splits_before, "an earlier result was changed"
    assert not (results / "data" / "cases.tsv").exists()  # Snakemake removed the rerun job's stale output

    # 2. a split file naming a case the cohort does not have
    split_file = tmp_path / "my_split.tsv"
    rows = pd.read_csv(io.BytesIO(splits_before), sep="\t")
    rows.loc[len(rows)] = ["BraTS-MET-99999-000", "train"]
    rows.to_csv(split_file, sep="\t", index=False)
    bad_split = workflow_config(tmp_path / "bad_split.yaml", cohort,
                                data={"split": {"fractions": [0.5, 0.25, 0.25], "file": str(split_file)}})
    run = run_snakemake(work, "--configfile", bad_split, "--cores", "1", "results/data/splits.tsv")
    _assert_failed_rule(run, "split", results / "logs" / "data" / "split.log", str(split_file),
                        "1 listed case(s) not in the case table: BraTS-MET-99999-000")
    cases_after_index = digests(results / "data")

    # 3. an unknown modality in the config: refused before any job, nothing touched
    bad_config = tmp_path / "bad_modality.yaml"
    bad_config.write_text(yaml.safe_dump({"modality_study": {"subsets": ["t1c", "t1c+dwi"]}}))
    run = run_snakemake(work, "--configfile", good, bad_config, "--cores", "1", "results/data/splits.tsv")
    assert run.returncode != 0
    assert "Traceback" not in run.stdout, run.stdout
    for needle in ("invalid configuration", str(bad_config), "modality_study.subsets[1]",
                   "unknown modality 'dwi'", "expected a subset of t1n, t1c, t2w, t2f"):
        assert needle in run.stdout, (needle, run.stdout)
    assert digests(results / "data") == cases_after_index


def test_snakemake_ensemble_with_a_missing_sequence(cohort, trained, tmp_path):
    """Only the seed ensembles' rule runs (--allowed-rules), on a trained run: it segments, tunes and
    evaluates in one job. A sequence of a test case then goes missing: the rerun fails naming the case
    and the file, and Snakemake removes every output of the job (no half-made ensemble rows).
    """
    work = tmp_path / "work"
    results = work / "results"
    (results / "data").mkdir(parents=True)
    shutil.copy2(trained.splits, results / "data" / "splits.tsv")
    (results / "data" / "preprocessed.done").touch()
    shutil.copytree(trained.run, results / "modality" / "unet" / "t1c" / "seed0")
    raw = tmp_path / "raw"
    shutil.copytree(cohort, raw)
    config = workflow_config(tmp_path / "config.yaml", raw, ensembles={
        "enabled": True, "members": {"twostage": None, "modality": "t1c"}, "postprocessing_grid_mm3": [10]})
    member = results / "ensembles" / "modality" / "t1c"
    target = str((member / "mirror_pp" / "metrics" / "test.tsv").relative_to(work))
    # the target before --allowed-rules, which would take it for a rule name
    first = run_snakemake(work, "--configfile", config, "--cores", "1", target, "--allowed-rules", "ensemble",
                          timeout=600)
    assert first.returncode == 0, first.stdout
    outputs = sorted(str(p.relative_to(member)) for p in member.rglob("*.tsv")) + ["postprocessing.json"]
    assert len(outputs) == 3 * 2 * 2 + 1 and (member / "postprocessing.json").is_file(), outputs

    test_case = pd.read_csv(trained.splits, sep="\t").query("split == 'test'")["case"].iloc[0]
    missing = raw / test_case / f"{test_case}-t1c.nii.gz"
    missing.unlink()
    # Snakemake sees no change (the raw cases are not inputs of their own): ask for the rerun
    run = run_snakemake(work, "--configfile", config, "--cores", "1", "--force", target, "--allowed-rules",
                        "ensemble", timeout=600)
    log = results / "logs" / "ensembles" / "modality" / "t1c" / "ensemble.log"
    _assert_failed_rule(run, "ensemble", log, f"{test_case}: t1c missing (expected {missing})")
    assert not any((member / name).exists() for name in outputs), "a failed ensemble job left outputs"
    assert not any((member / variant / "predictions").exists() for variant in ("mean", "mirror", "mirror_pp"))
