"""What a radiologist checks: tissue contrast per sequence, lesion appearance, label nesting, placement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brainmets.data.synthetic import generate_case

CUBE = np.ones((3, 3, 3), dtype=bool)


def normal_tissue(case, tissue: str, purity: float = 0.6, margin_voxels: int = 2) -> np.ndarray:
    """Voxels mostly of ``tissue`` and at least ``margin_voxels`` away from any lesion label."""
    near_lesion = ndimage.binary_dilation(case.seg > 0, iterations=margin_voxels)
    return (case.tissue_map(tissue) >= purity) & ~near_lesion


def surrounding_white_matter(case, shell_mm: float = 20.0) -> np.ndarray:
    """Normal white matter within ``shell_mm`` of the lesions (under the same bias field)."""
    distance = ndimage.distance_transform_edt(case.seg == 0, sampling=case.spacing)
    return normal_tissue(case, "wm", purity=0.5) & (distance <= shell_mm)


def _mean(image: np.ndarray, mask: np.ndarray, min_voxels: int = 5) -> float:
    assert mask.sum() >= min_voxels, "too few voxels to compare"
    return float(image[mask].mean())


# Expected order of mean normal-tissue intensity, brightest first.
TISSUE_ORDER = {
    "t1n": ("wm", "gm", "csf"),
    "t1c": ("wm", "gm", "csf"),
    "t2w": ("csf", "gm", "wm"),
    "t2f": ("gm", "wm", "csf"),
}


@pytest.mark.parametrize("sequence", sorted(TISSUE_ORDER))
def test_tissue_contrast_order_per_sequence(cases_2mm, sequence):
    for case in cases_2mm:
        means = {t: _mean(case.images[sequence], normal_tissue(case, t)) for t in ("gm", "wm", "csf")}
        ordered = [means[t] for t in TISSUE_ORDER[sequence]]
        assert ordered == sorted(ordered, reverse=True), (case.case_index, sequence, means)
        # distinct tissues, not equal-looking ones: at least 8 % apart
        assert all(a > 1.08 * b for a, b in zip(ordered, ordered[1:])), (case.case_index, sequence, means)


def test_full_size_case_contrast(full_case):
    means = {t: _mean(full_case.images["t1n"], normal_tissue(full_case, t, purity=0.9)) for t in ("gm", "wm", "csf")}
    assert means["wm"] > means["gm"] > means["csf"]
    flair = {t: _mean(full_case.images["t2f"], normal_tissue(full_case, t, purity=0.9)) for t in ("gm", "wm", "csf")}
    assert flair["gm"] > flair["wm"] > 2 * flair["csf"]  # CSF suppressed


def test_enhancing_tumour_bright_on_t1c_only(cases_2mm):
    for case in cases_2mm:
        et = case.seg == 3
        wm = surrounding_white_matter(case)
        # a tiny metastasis is a single enhancing voxel at 2 mm
        assert _mean(case.images["t1c"], et, 1) > 1.15 * _mean(case.images["t1c"], wm), case.case_index
        assert _mean(case.images["t1n"], et, 1) < _mean(case.images["t1n"], wm), case.case_index


def test_edema_bright_on_flair_and_t2_slightly_dark_on_t1(cases_2mm):
    for case in cases_2mm:
        edema = case.seg == 2
        wm = surrounding_white_matter(case)
        for sequence in ("t2f", "t2w"):
            assert _mean(case.images[sequence], edema) > 1.3 * _mean(case.images[sequence], wm), (case.case_index, sequence)
        t1_ratio = _mean(case.images["t1n"], edema) / _mean(case.images["t1n"], wm)
        assert 0.65 < t1_ratio < 0.97, (case.case_index, t1_ratio)


def test_necrosis_dark_on_t1_bright_on_t2(cases_2mm):
    necrotic = [case for case in cases_2mm if (case.seg == 1).sum() >= 5]
    assert len(necrotic) >= 2, "expected some necrotic lesions among ten patients"
    for case in necrotic:
        netc, wm = case.seg == 1, surrounding_white_matter(case)
        assert _mean(case.images["t1n"], netc) < 0.6 * _mean(case.images["t1n"], wm)
        assert _mean(case.images["t1c"], netc) < 0.6 * _mean(case.images["t1c"], wm)
        assert _mean(case.images["t2w"], netc) > 1.5 * _mean(case.images["t2w"], wm)


def _check_labels(case):
    seg, brain = case.seg, case.brain_mask()
    assert set(np.unique(seg)) <= {0, 1, 2, 3}
    assert not (seg > 0)[~brain].any(), "label outside the brain"
    netc, tc, wt = seg == 1, np.isin(seg, (1, 3)), seg > 0
    # every NETC voxel is enclosed by tumour; every tumour voxel by tumour or edema (inside the brain)
    assert not (ndimage.binary_dilation(netc, CUBE) & ~tc).any(), "NETC touches non-tumour"
    assert not (ndimage.binary_dilation(tc, CUBE) & brain & ~wt).any(), "tumour core not wrapped in edema"
    # one 26-connected component per lesion, each with a tumour core at its centre
    components, count = ndimage.label(wt, structure=CUBE)
    assert count == len(case.lesions), (case.case_index, count, len(case.lesions))
    for lesion in case.lesions:
        assert seg[lesion.centre] in (1, 3), (case.case_index, lesion)
    assert len(np.unique(components[tc])) == count  # no edema-only component


def test_labels_nested_and_inside_brain(cases_2mm, cohort_3mm):
    for case in cases_2mm + cohort_3mm:
        _check_labels(case)


def test_full_size_case_labels_and_brain(full_case):
    _check_labels(full_case)
    brain = full_case.brain_mask()
    # skull-stripped: zero exactly outside the brain, on every sequence
    for sequence, image in full_case.images.items():
        assert np.array_equal(image != 0, brain), sequence
    # an adult brain (template mask incl. CSF spaces, scaled +-6 %): 1.3-2.3 litres
    assert 1.3e6 < brain.sum() < 2.3e6
    # centred in x/y, with background on every side but the cut brainstem at the bottom
    where = np.argwhere(brain)
    low, high = where.min(axis=0), where.max(axis=0)
    assert low[0] > 20 and high[0] < 219 and low[1] > 10 and high[1] < 229
    assert abs((low[0] + high[0]) / 2 - 119.5) < 12
    assert high[2] < 154  # the vertex fits in the field


def test_lesions_sit_near_grey_white_junction(cohort_3mm):
    gm_at_centre, wm_at_centre = [], []
    for case in cohort_3mm:
        gm, wm = case.tissue_map("gm"), case.tissue_map("wm")
        for lesion in case.lesions:
            gm_at_centre.append(gm[lesion.centre])
            wm_at_centre.append(wm[lesion.centre])
    gm_at_centre, wm_at_centre = np.array(gm_at_centre), np.array(wm_at_centre)
    # most centres have both tissues around them; none sits in pure CSF
    mixed = (gm_at_centre > 0.1) & (wm_at_centre > 0.1)
    assert mixed.mean() > 0.6, mixed.mean()
    assert (gm_at_centre + wm_at_centre > 0.2).all()


def test_lesion_count_and_size_distribution(cohort_3mm):
    counts = np.array([len(case.lesions) for case in cohort_3mm])
    assert counts.min() >= 1
    assert 1 <= np.median(counts) <= 3
    assert (counts <= 3).mean() >= 0.6  # most patients: 1-3 metastases
    assert (counts > 5).sum() >= 1  # some with many
    assert counts.max() >= 8  # and a tail
    radii = np.array([lesion.radius_mm for case in cohort_3mm for lesion in case.lesions])
    assert radii.min() >= 1.5 and radii.max() <= 20.0
    assert 3.0 < np.median(radii) < 7.0
    assert (radii > 10).any() and (radii < 3).any()
    necrotic = np.array([lesion.has_necrosis for case in cohort_3mm for lesion in case.lesions])
    assert not necrotic[radii <= 4.0].any(), "necrosis only in larger lesions"
    assert necrotic[radii > 10.0].mean() > 0.5
    edema = np.array([lesion.edema_mm for case in cohort_3mm for lesion in case.lesions])
    assert np.corrcoef(radii, edema)[0, 1] > 0.5, "edema roughly proportional to size"


def test_sizes_are_physical_across_spacings(cases_2mm, grid_3mm):
    """The same patient at 2 mm and 3 mm: same lesion radii in mm, similar volumes in mm^3."""
    for case in cases_2mm[:4]:
        coarse = generate_case(case.case_index, 0, *grid_3mm)
        assert [l.radius_mm for l in coarse.lesions] == pytest.approx([l.radius_mm for l in case.lesions])
        brain_fine = case.brain_mask().sum() * 2.0**3
        brain_coarse = coarse.brain_mask().sum() * 3.0**3
        assert brain_coarse == pytest.approx(brain_fine, rel=0.05)
        # the tumour core is drawn in mm (edema has a minimum width of two voxels, so it is not)
        tc_fine = np.isin(case.seg, (1, 3)).sum() * 2.0**3
        tc_coarse = np.isin(coarse.seg, (1, 3)).sum() * 3.0**3
        assert tc_coarse == pytest.approx(tc_fine, rel=0.35, abs=150.0)
