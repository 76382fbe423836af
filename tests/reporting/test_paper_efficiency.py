"""The efficiency table in the paper setup: the paper-size networks' model_info.json, no training.

Sizes come from configs/paper.yaml through the function training uses
(``write_model_info``, FLOPs counted on the meta device); the per-case
inference logs hold the windows a BraTS volume (240 x 240 x 155) needs.
"""

from __future__ import annotations

import pandas as pd
import pytest

from brainmets.config import load_config
from brainmets.inference.windows import sliding_window_count
from brainmets.reporting.collect import make_group
from brainmets.reporting.tables import efficiency_table
from brainmets.training.trainer import write_model_info

REPO_PAPER = __import__("pathlib").Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"
ALL_FOUR = "t1c+t1n+t2f+t2w"
BRATS_SHAPE = (240, 240, 155)
KEPT = 0.25  # fraction of windows the detector keeps in this made-up log
CASES = ("BraTS-MET-00001-000", "BraTS-MET-00002-000")


def _inference_log(run_dir, windows: int, flops: dict[str, float]) -> None:
    rows = [{"case": case, "seconds": 1.0, "windows_total": windows, **flops} for case in CASES]
    (run_dir / "inference").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(run_dir / "inference" / "test.tsv", sep="\t", index=False)


@pytest.fixture(scope="module")
def paper_efficiency(tmp_path_factory):
    config = load_config(REPO_PAPER)
    models, overlap = config["models"], config["inference"]["overlap"]
    results = tmp_path_factory.mktemp("paper")
    gmac = {}
    for name, run_dir in (("unet", results / "modality" / "unet" / ALL_FOUR / "seed0"),
                          ("detector", results / "twostage" / "detector" / "selected" / "seed0"),
                          ("segmentor", results / "twostage" / "segmentor" / "selected" / "seed0")):
        spec = models[name]
        out = 1 if name == "detector" else 3
        run_dir.mkdir(parents=True)
        write_model_info(run_dir / "model_info.json", spec, 3 if name != "unet" else 4, out, spec["patch"], name)
        gmac[name] = pd.read_json(run_dir / "model_info.json", typ="series")["gmac_per_window"]
    unet_windows = sliding_window_count(BRATS_SHAPE, models["unet"]["patch"], overlap)
    _inference_log(results / "modality" / "unet" / ALL_FOUR / "seed0", unet_windows,
                   {"flops": gmac["unet"] * 2e9 * unet_windows, "fraction_kept": 1.0})
    windows = sliding_window_count(BRATS_SHAPE, models["segmentor"]["patch"], overlap)
    detector, segmentor = gmac["detector"] * 2e9 * windows, gmac["segmentor"] * 2e9 * windows * KEPT
    _inference_log(results / "twostage" / "combined" / "selected" / "seed0", windows,
                   {"flops": detector + segmentor, "flops_detector": detector, "flops_segmentor": segmentor,
                    "fraction_kept": KEPT})
    groups = [make_group(results, "modality", "unet", ALL_FOUR, "3D U-Net", [0]),
              make_group(results, "twostage", "combined", "selected", "Two-stage", [0], "t1c+t1n+t2f")]
    table = efficiency_table(groups, "test", reference_model="unet")
    return table.to_frame().set_index("model"), gmac, unet_windows, windows


def test_3d_unet_row_is_478_gmac_per_window(paper_efficiency):
    df, _, unet_windows, _ = paper_efficiency
    assert df.at["3D U-Net", "gmac_per_window"] == pytest.approx(478.1, abs=0.1)
    assert df.at["3D U-Net", "windows_per_case"] == unet_windows
    assert df.at["3D U-Net", "gmac_per_case"] == pytest.approx(478.1 * unet_windows, rel=1e-3)


def test_two_stage_reduction_per_window_is_the_papers_85_percent(paper_efficiency):
    df, gmac, unet_windows, windows = paper_efficiency
    row = df.loc["Two-stage"]
    assert row["gmac_per_window"] == pytest.approx(59.7, abs=0.1)  # the paper's "about 60", 3 sequences in
    assert row["detector_gmac_per_window"] == pytest.approx(6.8, abs=0.1)  # the paper's "7"
    # the paper: "about 478 against about 60, an ~85 % reduction" (exactly 1 - 59.7 / 478.1 = 87.5 %)
    assert row["reduction_per_window_pct"] == pytest.approx(87.5, abs=0.1)
    # per case: the detector on every 64^3 window plus the segmentor on the kept quarter, against the
    # U-Net on every 128^3 window of the same volume
    spent = (gmac["detector"] + KEPT * gmac["segmentor"]) * windows
    assert row["gmac_per_case"] == pytest.approx(spent)
    assert row["reduction_per_case_pct"] == pytest.approx((1 - spent / (gmac["unet"] * unet_windows)) * 100)
    assert row["windows_kept_pct"] == pytest.approx(100 * KEPT)
