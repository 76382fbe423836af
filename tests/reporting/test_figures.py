"""Figures: every file exists as a real PNG/PDF; case choice and slice choice."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from brainmets.cli import main
from brainmets.errors import BrainmetsError
from brainmets.reporting.figures import choose_case, largest_lesion_slice

STEMS = ("patients_per_split", "modality_heatmap", "qualitative", "training_modality", "training_twostage",
         "training_baselines")


def test_missing_prediction_is_named(fake_results, spec, capsys):
    case = fake_results.qualitative_case
    pred = (fake_results.results / "baselines" / "segresnet" / spec.ALL_FOUR / "seed0" / "predictions" / "test"
            / f"{case}.nii.gz")
    pred.unlink()
    rc = main(["figures", "--results", str(fake_results.results), "--config", str(fake_results.config),
               "--out-dir", str(fake_results.root / "f")])
    assert rc == 2
    assert str(pred) in capsys.readouterr().err


def test_figure_stems_follow_config(fake_results):
    from brainmets.reporting.collect import load_report_config
    from brainmets.reporting.figures import figure_stems

    assert figure_stems(load_report_config(fake_results.config)) == list(STEMS)


def test_choose_case_most_lesions_or_configured():
    cohort = pd.DataFrame({"case": ["a", "b", "c", "d"], "split": ["test", "test", "val", "test"],
                           "n_lesions": [2, 7, 30, 7]})
    assert choose_case(cohort, None)["case"] == "b"  # most lesions among test cases; ties: first by name
    assert choose_case(cohort, "d")["case"] == "d"
    with pytest.raises(BrainmetsError, match="not a test case"):
        choose_case(cohort, "c")


def test_largest_lesion_slice():
    seg = np.zeros((8, 8, 6), dtype=np.uint8)
    seg[1:3, 1:3, 1] = 3
    seg[2:7, 2:7, 4] = 2
    assert largest_lesion_slice(seg) == 4


def test_reporting_runs_without_importing_torch_or_monai(fake_results):
    """Tables, figures and selection are cheap local jobs: importing torch alone costs ~5 s."""
    r, c, root = str(fake_results.results), str(fake_results.config), fake_results.root
    common = f"'--results', {r!r}, '--config', {c!r}, '--out-dir'"
    code = (
        "import sys; from brainmets.cli import main\n"
        f"assert main(['select', '--results', {r!r}, '--out', {str(root / 'sel.json')!r}]) == 0\n"
        f"assert main(['tables', {common}, {str(root / 't')!r}]) == 0\n"
        f"assert main(['figures', {common}, {str(root / 'f')!r}]) == 0\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'monai'}); print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_valid_figures(root / "f")


def assert_valid_figures(out):
    for stem in STEMS:
        png, pdf = (out / f"{stem}.png").read_bytes(), (out / f"{stem}.pdf").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, stem
        assert pdf[:5] == b"%PDF-" and len(pdf) > 2000 and pdf.rstrip().endswith(b"%%EOF"), stem
    assert not list(out.glob(".*part*"))  # no temporary files left behind
