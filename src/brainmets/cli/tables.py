"""`brainmets tables`: result tables (CSV, booktabs LaTeX, HTML) from the results tree."""

from __future__ import annotations

import argparse

HELP = "write the result tables (CSV, LaTeX and HTML) of the study"
DESCRIPTION = (
    "Table 1 (modality study), Table 2 (comparison) with paired Wilcoxon tests, efficiency and detection "
    "tables from results/<study>/<model>/<subset>/seed<k>/ files; mean (std) over seeds, best bold, "
    "second underlined; LaTeX floats for a two-column paper. Torch-free."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--config", required=True, help="config.yaml of the study")
    parser.add_argument("--out-dir", required=True, help="output directory, e.g. results/tables")
    parser.add_argument("--split", default="test", choices=["val", "test"], help="split reported (default: test)")
    parser.add_argument("--size-bins", nargs="+", type=float, default=None, metavar="MM3",
                        help="upper edges of the GT lesion-volume bins in mm^3 (default: config or 10 100 1000)")
    parser.add_argument("--table2-layout", choices=["single", "split"], default=None,
                        help="Table 2 as one float shrunk to the text width where wider (single) or as "
                        "legacy and lesion-wise floats (split); default: config reporting.table2_layout or single")


def run(args: argparse.Namespace) -> int:
    from brainmets.reporting.collect import load_report_config
    from brainmets.reporting.tables import make_tables

    cfg = load_report_config(args.config)
    if args.size_bins:
        cfg.size_bins = sorted(args.size_bins)
    if args.table2_layout:
        cfg.table2_layout = args.table2_layout
    make_tables(args.results, cfg, args.out_dir, split=args.split)
    return 0
