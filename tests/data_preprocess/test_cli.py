"""`brainmets preprocess` over a case table written like `brainmets index` writes it."""

from __future__ import annotations

import pandas as pd
import pytest

from brainmets.cli import main
from brainmets.data.layout import CASE_COLUMNS
from brainmets.data.preprocess import cache_paths, load_case
from brainmets.io import write_table


def _case_table(path, rows):
    """A cases.tsv with every column `brainmets index` writes (statistics are not read here)."""
    records = []
    for synthetic, status in rows:
        record = {column: 0 for column in CASE_COLUMNS}
        record.update(case=synthetic.case, status=status, reason="" if status == "ok" else "t1c missing",
                      root=str(synthetic.paths["seg"].parent.parent), shape="40x44x30", spacing="1x1x1",
                      **{key: str(p) for key, p in synthetic.paths.items()})
        records.append(record)
    write_table(pd.DataFrame(records, columns=list(CASE_COLUMNS)), path)
    return path


@pytest.fixture
def cohort(case_factory, tmp_path):
    cases = [case_factory("lps", "BraTS-MET-00001-000", seed=1),
             case_factory("permuted", "BraTS-MET-00002-000", seed=2),
             case_factory("ras", "BraTS-MET-00003-000", seed=3)]
    table = _case_table(tmp_path / "cases.tsv", [(cases[0], "ok"), (cases[1], "ok"), (cases[2], "skipped")])
    return cases, table


def test_one_case_with_spacing(cohort, tmp_path):
    cases, table = cohort
    out = tmp_path / "preprocessed"
    code = main(["preprocess", "--cases", str(table), "--out-dir", str(out),
                 "--case", cases[1].case, "--spacing", "2", "2", "2"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{cases[1].case}.json", f"{cases[1].case}.npy"]
    _, _, meta = load_case(out, cases[1].case)
    assert meta["spacing"] == [2.0, 2.0, 2.0] and meta["resampled"] is True


def test_all_ok_cases_in_parallel_skip_the_skipped(cohort, tmp_path):
    cases, table = cohort
    out = tmp_path / "preprocessed"
    assert main(["preprocess", "--cases", str(table), "--out-dir", str(out), "--workers", "2"]) == 0
    assert sorted(p.name for p in out.glob("*.npy")) == [f"{c.case}.npy" for c in cases[:2]]
    for synthetic in cases[:2]:
        _, label, meta = load_case(out, synthetic.case)
        assert meta["original_label_counts"]["3"] == int((synthetic.seg == 3).sum())


def test_failing_case_is_named_and_other_outputs_stay(cohort, tmp_path, capsys):
    cases, table = cohort
    out = tmp_path / "preprocessed"
    assert main(["preprocess", "--cases", str(table), "--out-dir", str(out), "--case", cases[0].case]) == 0
    npy_path, json_path = cache_paths(out, cases[0].case)
    before = npy_path.stat().st_mtime_ns, json_path.read_bytes()

    cases[1].paths["t2w"].write_bytes(b"not a nifti")
    code = main(["preprocess", "--cases", str(table), "--out-dir", str(out)])

    assert code == 2
    err = capsys.readouterr().err
    assert cases[1].case in err and str(cases[1].paths["t2w"]) in err
    assert (npy_path.stat().st_mtime_ns, json_path.read_bytes()) == before
    assert not any(out.glob(f"{cases[1].case}*"))
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temp files left behind


def test_unknown_or_skipped_case_is_an_error(cohort, tmp_path, capsys):
    cases, table = cohort
    out = tmp_path / "preprocessed"
    assert main(["preprocess", "--cases", str(table), "--out-dir", str(out), "--case", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["preprocess", "--cases", str(table), "--out-dir", str(out), "--case", cases[2].case]) == 2
    err = capsys.readouterr().err
    assert cases[2].case in err and "skipped" in err and "t1c missing" in err
    assert not out.exists() or not any(out.iterdir())
