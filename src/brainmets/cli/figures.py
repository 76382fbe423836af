"""`brainmets figures`: figures (PNG + PDF) from the results tree."""

from __future__ import annotations

import argparse

HELP = "draw the study's figures (PNG and PDF)"
DESCRIPTION = (
    "Patients per split by metastasis count, modality-by-region heatmap, a qualitative panel of one test "
    "case and training curves per study. Torch-free; matplotlib Agg."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--config", required=True, help="config.yaml of the study")
    parser.add_argument("--out-dir", required=True, help="output directory, e.g. results/figures")
    parser.add_argument("--case", default=None,
                        help="test case of the qualitative panel (default: config reporting.qualitative_case, "
                        "else the test case with most lesions)")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from brainmets.reporting.collect import load_report_config
    from brainmets.reporting.figures import make_figures

    make_figures(args.results, load_report_config(args.config), args.out_dir, case=args.case)
    return 0
