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


# --------------------------------------------------------------------------- what the figures show


def rendered(fig) -> np.ndarray:
    """The figure as the Agg canvas draws it (what save_figure writes): H x W x RGB, uint8."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3]


def pixels_of(fig, ax, colour: str, tolerance: int = 30) -> int:
    """Pixels inside ``ax`` within ``tolerance`` (per channel) of ``colour``."""
    from matplotlib.colors import to_rgb

    image = rendered(fig)
    box = ax.get_window_extent()
    height = image.shape[0]
    crop = image[int(height - box.y1):int(height - box.y0), int(box.x0):int(box.x1)].astype(int)
    target = np.array([round(255 * c) for c in to_rgb(colour)])
    return int((np.abs(crop - target) <= tolerance).all(axis=-1).sum())


def qualitative_inputs(fake_results):
    from brainmets.reporting.collect import comparison_groups, load_report_config

    results = fake_results.results
    case = fake_results.qualitative_case
    root = fake_results.root / "cohort" / case
    groups = comparison_groups(results, load_report_config(fake_results.config))
    predictions = [(g.label, g.run_dir(0) / "predictions" / "test" / f"{case}.nii.gz") for g in groups]
    return case, root / f"{case}-t1c.nii.gz", root / f"{case}-seg.nii.gz", predictions


def test_qualitative_panel_shows_netc_in_its_legend_colour(fake_results):
    import nibabel as nib

    from brainmets.reporting.figures import LABEL_COLOURS, qualitative_figure

    case, t1c, seg, predictions = qualitative_inputs(fake_results)
    fig = qualitative_figure(case, t1c, seg, predictions)
    legend = {t.get_text(): h.get_facecolor() for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert legend["NETC"][:3] == pytest.approx(tuple(int(LABEL_COLOURS[1][i:i + 2], 16) / 255 for i in (1, 3, 5)))
    gt_axes = fig.axes[0]
    # The NETC core lies inside ET on the chosen slice: drawn before ET, ET's outline would cover it.
    assert pixels_of(fig, gt_axes, LABEL_COLOURS[1]) > 20
    # Without NETC in the ground truth, no pixel of the ground-truth panel has its colour.
    image = nib.load(str(seg))
    data = np.asarray(image.dataobj).copy()
    data[data == 1] = 3
    nib.save(nib.Nifti1Image(data, image.affine), str(seg))
    fig = qualitative_figure(case, t1c, seg, predictions)
    assert pixels_of(fig, fig.axes[0], LABEL_COLOURS[1]) == 0
    assert pixels_of(fig, fig.axes[0], LABEL_COLOURS[3]) > 20


def test_empty_prediction_is_marked(fake_results):
    import nibabel as nib

    from brainmets.reporting.figures import LABEL_COLOURS, qualitative_figure

    case, t1c, seg, predictions = qualitative_inputs(fake_results)
    label, path = predictions[1]
    image = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.zeros(image.shape, dtype=np.uint8), image.affine), str(path))
    fig = qualitative_figure(case, t1c, seg, predictions)
    notes = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes}
    assert notes[label] == ["empty prediction"]
    assert all(not texts for title, texts in notes.items() if title and title != label)
    empty_axes = next(ax for ax in fig.axes if ax.get_title() == label)
    assert all(pixels_of(fig, empty_axes, colour) == 0 for colour in LABEL_COLOURS.values())


def test_training_curves_of_15_subsets_are_readable(tmp_path, spec):
    from matplotlib.colors import to_hex

    from brainmets.constants import all_subsets, subset_label
    from brainmets.reporting.collect import make_group
    from brainmets.reporting.figures import modality_curve_panels, training_curves_figure

    groups = []
    for subset in all_subsets():
        spec.write_training(tmp_path / "modality" / "unet" / subset / "seed0", "unet")
        groups.append(make_group(tmp_path, "modality", "unet", subset, subset_label(subset), [0]))
    fig = training_curves_figure(modality_curve_panels(groups), "Modality study")
    rendered(fig)
    axes = [ax for ax in fig.axes if ax.get_legend()]
    assert [ax.get_title() for ax in axes] == ["1 sequence", "2 sequences", "3 sequences", "4 sequences"]
    labelled = []
    for ax in axes:
        lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert len(lines) <= 6
        colours = [to_hex(line.get_color()) for line in lines]
        assert len(set(colours)) == len(colours)  # no two curves of a panel share a colour
        legend_box, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend_box.y1 <= axes_box.y0  # the legend lies below the plot, not over its curves
        labelled += [line.get_label() for line in lines]
    assert sorted(labelled) == sorted(subset_label(s) for s in all_subsets())


def test_heatmap_colour_bar_is_labelled(fake_results):
    from brainmets.reporting.collect import load_report_config, modality_groups
    from brainmets.reporting.figures import modality_heatmap_figure
    from brainmets.reporting.tables import modality_table

    groups = modality_groups(fake_results.results, load_report_config(fake_results.config))
    fig = modality_heatmap_figure(modality_table(groups))
    colour_bar = fig.axes[1]
    assert colour_bar.get_ylabel() == "Dice (%)"
