"""BraTS 2023 lesion-wise rules (BraTS-MET settings) on hand-built cases, answers derived by hand."""

from __future__ import annotations

import numpy as np
import pytest

from brainmets.errors import BrainmetsError
from brainmets.evaluation import CASE_COLUMNS, LESION_COLUMNS, evaluate_case

ISO = (1.0, 1.0, 1.0)
SHAPE = (20, 20, 12)


def _empty():
    return np.zeros(SHAPE, np.uint8)


def _by_region(rows):
    return {row["region"]: row for row in rows}


def _cube(volume, corner, size=3, label=3):
    x, y, z = corner
    volume[x : x + size, y : y + size, z : z + size] = label
    return volume


def test_columns_are_exactly_the_documented_ones():
    rows, lesions = evaluate_case(_cube(_empty(), (2, 2, 2)), _cube(_empty(), (2, 2, 2)), ISO, case="c")
    assert [list(r) for r in rows] == [list(CASE_COLUMNS)] * 5
    assert [r["region"] for r in rows] == ["WT", "TC", "ET", "NETC", "SNFH"]
    assert all(list(r) == list(LESION_COLUMNS) for r in lesions)


def test_both_empty_scores_perfect():
    rows, lesions = evaluate_case(_empty(), _empty(), ISO)
    for row in rows:
        assert (row["legacy_dice"], row["legacy_hd95"], row["lesion_dice"], row["lesion_hd95"]) == (1.0, 0.0, 1.0, 0.0)
        assert (row["num_tp"], row["num_fp"], row["num_fn"]) == (0, 0, 0)
    assert lesions == []


def test_empty_prediction_is_one_missed_lesion():
    # GT: one 3x3x3 ET cube (27 mm^3 > 2). Legacy: Dice 0, HD95 inf -> 374.
    # Lesion-wise: 1 FN, 0 FP -> Dice 0/1 = 0, HD95 374/1 = 374.
    gt = _cube(_empty(), (4, 4, 4))
    rows = _by_region(evaluate_case(_empty(), gt, ISO)[0])
    for region in ("WT", "TC", "ET"):
        r = rows[region]
        assert (r["legacy_dice"], r["legacy_hd95"], r["lesion_dice"], r["lesion_hd95"]) == (0.0, 374.0, 0.0, 374.0)
        assert (r["num_tp"], r["num_fp"], r["num_fn"]) == (0, 0, 1)
        assert r["gt_volume"] == 27.0 and r["pred_volume"] == 0.0
    # No label 1 or 2 anywhere: those regions are empty on both sides.
    assert rows["NETC"]["lesion_dice"] == 1.0 and rows["SNFH"]["legacy_hd95"] == 0.0


def test_empty_ground_truth_makes_every_component_a_false_positive():
    # Two separate predicted cubes, no GT: 2 FPs -> Dice 0/(0+2) = 0,
    # HD95 (0 + 2*374)/2 = 374; legacy Dice 0, HD95 374.
    pred = _cube(_cube(_empty(), (1, 1, 1)), (10, 10, 6))
    rows, lesions = evaluate_case(pred, _empty(), ISO)
    et = _by_region(rows)["ET"]
    assert (et["legacy_dice"], et["legacy_hd95"], et["lesion_dice"], et["lesion_hd95"]) == (0.0, 374.0, 0.0, 374.0)
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (0, 2, 0)
    fps = [les for les in lesions if les["region"] == "ET"]
    assert [(f["kind"], f["lesion_id"], f["volume"], f["dice"], f["hd95"]) for f in fps] == [
        ("fp", 1, 27.0, 0.0, 374.0), ("fp", 2, 27.0, 0.0, 374.0)
    ]


def test_perfect_match_and_a_false_positive():
    # One exact match (Dice 1, HD95 0) plus one FP cube: lesion Dice
    # (1 + 0)/(1 + 1) = 0.5, HD95 (0 + 374)/2 = 187; legacy Dice
    # 2*27/(27 + 54) = 2/3.
    gt = _cube(_empty(), (2, 2, 2))
    pred = _cube(_cube(_empty(), (2, 2, 2)), (12, 12, 6))
    et = _by_region(evaluate_case(pred, gt, ISO)[0])["ET"]
    assert et["lesion_dice"] == pytest.approx(0.5)
    assert et["lesion_hd95"] == pytest.approx(187.0)
    assert et["legacy_dice"] == pytest.approx(2 / 3)
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (1, 1, 0)


def test_specks_at_or_below_two_mm3_are_left_out_and_spacing_decides():
    # GT: a 3x3x3 cube (found exactly) and, far away, a 2-voxel speck nobody
    # predicted. At 1 mm iso the speck is 2 mm^3 <= 2: not scored, not a FN ->
    # lesion Dice 1/1 = 1. Legacy still sees it: Dice 2*27/(29 + 27).
    gt = _cube(_empty(), (2, 2, 2))
    gt[15, 15, 9:11] = 3
    pred = _cube(_empty(), (2, 2, 2))
    et = _by_region(evaluate_case(pred, gt, ISO)[0])["ET"]
    assert (et["lesion_dice"], et["lesion_hd95"]) == (1.0, 0.0)
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (1, 0, 0)
    assert et["legacy_dice"] == pytest.approx(54 / 56)
    # With 1.5 mm slices the speck is 3 mm^3 > 2 and becomes a missed lesion:
    # Dice (1 + 0)/2 = 0.5, HD95 (0 + 374)/2 = 187.
    rows, lesions = evaluate_case(pred, gt, (1.0, 1.0, 1.5))
    et = _by_region(rows)["ET"]
    assert (et["lesion_dice"], et["lesion_hd95"]) == (0.5, 187.0)
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (1, 0, 1)
    speck = [les for les in lesions if les["region"] == "ET" and les["lesion_id"] == 2][0]
    assert (speck["volume"], speck["counted"], speck["detected"]) == (3.0, True, False)


def test_component_on_an_uncounted_speck_is_neither_tp_nor_fp():
    # FPs are the components touching no dilated GT lesion, small lesions
    # included: a prediction of a 1-voxel GT speck is not a FP, and the speck
    # is not scored -> nothing to score: Dice 1, HD95 0.
    gt = _empty()
    gt[5, 5, 5] = 3
    pred = _empty()
    pred[5, 5, 5:7] = 3
    et = _by_region(evaluate_case(pred, gt, ISO)[0])["ET"]
    assert (et["lesion_dice"], et["lesion_hd95"]) == (1.0, 0.0)
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (0, 0, 0)


@pytest.mark.parametrize("gap, merged", [(1, True), (2, True), (3, False)])
def test_gt_lesions_merge_when_their_dilations_touch(gap, merged):
    # Two 2x2x2 GT blobs along axis 0 with `gap` empty planes between them.
    # Dilating once grows each by one plane, so they meet (overlap for gap 1,
    # touch face to face for gap 2) and form one lesion; with 3 planes a gap
    # remains. The prediction covers the first blob only (8 voxels).
    # merged:   one lesion of 16 voxels, Dice 2*8/(16 + 8) = 2/3, 1 TP.
    # separate: blob 1 Dice 1, blob 2 missed -> Dice (1 + 0)/2 = 0.5, 1 TP 1 FN.
    gt = _empty()
    gt[2:4, 5:7, 5:7] = 3
    gt[4 + gap : 6 + gap, 5:7, 5:7] = 3
    pred = _empty()
    pred[2:4, 5:7, 5:7] = 3
    rows, lesions = evaluate_case(pred, gt, ISO)
    et = _by_region(rows)["ET"]
    gt_lesions = [les for les in lesions if les["region"] == "ET" and les["kind"] == "gt"]
    if merged:
        assert len(gt_lesions) == 1 and gt_lesions[0]["volume"] == 16.0
        assert et["lesion_dice"] == pytest.approx(2 / 3)
        assert (et["num_tp"], et["num_fn"]) == (1, 0)
    else:
        assert [les["volume"] for les in gt_lesions] == [8.0, 8.0]
        assert et["lesion_dice"] == pytest.approx(0.5)
        assert (et["num_tp"], et["num_fn"]) == (1, 1)


def test_prediction_touching_two_lesions_counts_for_both():
    # GT: 2x2x2 blobs at x 2-3 and x 9-10 (separate lesions). The prediction is
    # one bar x 2-10 over the same y/z (2*2*9 = 36 voxels), touching both.
    # Each lesion is compared with the whole bar: Dice 2*8/(8 + 36) = 4/11;
    # lesion Dice (4/11 + 4/11)/2 = 4/11, 2 TP, no FP.
    gt = _empty()
    gt[2:4, 5:7, 5:7] = 3
    gt[9:11, 5:7, 5:7] = 3
    pred = _empty()
    pred[2:11, 5:7, 5:7] = 3
    rows, lesions = evaluate_case(pred, gt, ISO)
    et = _by_region(rows)["ET"]
    assert et["lesion_dice"] == pytest.approx(4 / 11)
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (2, 0, 0)
    assert [les["matched_components"] for les in lesions if les["region"] == "ET"] == [1, 1]


def test_near_miss_within_the_dilation_is_a_detection_with_hd95():
    # GT voxel at z=4, predicted voxel at z=5 (adjacent: inside the dilation,
    # so TP), spacing (1, 1, 3): GT volume 3 mm^3 > 2, counted. No overlap:
    # Dice 0. Corners: GT z-planes 4,5; pred 5,6. Half of each voxel's eight
    # equal surfels coincide (0 mm), the other half are one plane = 3 mm away;
    # 95 % of the area is reached only at the far half -> HD95 3 mm, legacy too.
    gt, pred = _empty(), _empty()
    gt[5, 5, 4] = 3
    pred[5, 5, 5] = 3
    et = _by_region(evaluate_case(pred, gt, (1.0, 1.0, 3.0))[0])["ET"]
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (1, 0, 0)
    assert et["lesion_dice"] == 0.0 and et["legacy_dice"] == 0.0
    assert et["lesion_hd95"] == pytest.approx(3.0) and et["legacy_hd95"] == pytest.approx(3.0)


def test_regions_take_their_labels():
    # NETC (1) inside ET (3), oedema (2) around: the prediction swaps NETC for
    # ET. WT and TC are unchanged (Dice 1); ET gains the NETC voxels; NETC is
    # missed entirely.
    gt = _empty()
    gt[2:9, 2:9, 2:9] = 2
    gt[3:8, 3:8, 3:8] = 3
    gt[4:7, 4:7, 4:7] = 1
    pred = gt.copy()
    pred[pred == 1] = 3
    rows = _by_region(evaluate_case(pred, gt, ISO)[0])
    assert rows["WT"]["legacy_dice"] == 1.0 and rows["TC"]["legacy_dice"] == 1.0
    assert rows["SNFH"]["legacy_dice"] == 1.0
    # ET: GT 125 - 27 = 98 voxels, prediction 125: Dice 2*98/223.
    assert rows["ET"]["legacy_dice"] == pytest.approx(196 / 223)
    assert (rows["NETC"]["legacy_dice"], rows["NETC"]["num_fn"]) == (0.0, 1)


def test_lesion_ids_follow_raster_order_of_the_dilated_ground_truth():
    gt = _empty()
    gt[12:15, 2:5, 2:5] = 3  # later in raster order ...
    gt[2:5, 12:15, 2:5] = 3  # ... than this one (smaller first index)
    gt[2:5, 12:15, 2:4] = 1
    pred = _empty()
    pred[2:5, 12:15, 2:5] = 3
    lesions = [les for les in evaluate_case(pred, gt, ISO)[1] if les["region"] == "ET"]
    assert [(les["lesion_id"], les["detected"]) for les in lesions] == [(1, True), (2, False)]


def test_lesions_at_the_volume_border():
    # A lesion on the volume faces, predicted exactly, must score perfectly
    # (the outside counts as background, as in the reference).
    gt = _empty()
    gt[:3, :3, :3] = 3
    et = _by_region(evaluate_case(gt.copy(), gt, ISO)[0])["ET"]
    assert (et["legacy_dice"], et["legacy_hd95"], et["lesion_dice"], et["lesion_hd95"]) == (1.0, 0.0, 1.0, 0.0)


@pytest.mark.parametrize("value", [4, -1, 2.5])
def test_labels_outside_brats_values_are_an_error(value):
    pred = _empty().astype(np.float32)
    pred[3, 3, 3] = value
    with pytest.raises(BrainmetsError, match="case-x: .*prediction label values"):
        evaluate_case(pred, _empty(), ISO, case="case-x")


def test_shape_mismatch_is_an_error():
    with pytest.raises(BrainmetsError, match="shape"):
        evaluate_case(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), ISO)
