"""`brainmets index --unlabelled`: a cohort without segmentations is checked like any other, minus the label."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmets.cli import main as cli_main
from brainmets.data.layout import STATUS_OK, index_cohort, load_cases
from brainmets.errors import BrainmetsError

from .conftest import NEW


def test_unlabelled_cohort_is_indexed_without_label_columns(tmp_path, new_cases, capsys):
    out = tmp_path / "cases.tsv"
    assert cli_main(["index", "--root", str(new_cases), "--out", str(out), "--unlabelled", "--no-progress"]) == 0
    table = pd.read_csv(out, sep="\t")
    assert table["case"].tolist() == NEW
    assert (table["status"] == STATUS_OK).all()
    assert table["seg"].isna().all() and table["n_lesions"].isna().all() and table["vol_wt"].isna().all()
    first = nib.load(new_cases / NEW[0] / f"{NEW[0]}-t1n.nii.gz")
    assert table.loc[0, "shape"] == "x".join(map(str, first.shape))
    with pytest.raises(BrainmetsError, match="without segmentation.*--unlabelled"):
        load_cases(out)

    assert cli_main(["index", "--root", str(new_cases), "--out", str(tmp_path / "labelled.tsv"),
                     "--no-progress"]) == 2
    assert "missing seg" in capsys.readouterr().err
    assert not (tmp_path / "labelled.tsv").exists()


def test_unlabelled_cases_are_still_checked(new_cases):
    case = NEW[1]
    path = new_cases / case / f"{case}-t2w.nii.gz"
    image = nib.load(path)
    data = np.asanyarray(image.dataobj).astype(np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), path)
    with pytest.raises(BrainmetsError, match=f"{case}.*non-finite"):
        index_cohort(new_cases, progress=False, labelled=False)
    (new_cases / NEW[0] / f"{NEW[0]}-t1c.nii.gz").unlink()
    with pytest.raises(BrainmetsError, match=f"none of the 2 cases.*{NEW[0]}: missing t1c"):
        index_cohort(new_cases, on_bad_case="skip", progress=False, labelled=False)
