"""`brainmets preprocess`: decode each case's NIfTI files once into the training cache."""

from __future__ import annotations

import argparse

HELP = "reorient, crop, resample and z-score cases into <out-dir>/<case>.npy + .json"
DESCRIPTION = (
    "Build the preprocessed cache that every training job reads: per case one float32 "
    "array (5, X, Y, Z) (channels t1n, t1c, t2w, t2f z-scored over the brain, then the "
    "label) and a JSON with what is needed to map predictions back to the original grid. "
    "Only cases with status 'ok' in the case table are processed; complete caches built "
    "with the same sources and spacing are kept."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", required=True, metavar="TSV",
                        help="case table written by `brainmets index` (results/data/cases.tsv)")
    parser.add_argument("--out-dir", required=True, metavar="DIR",
                        help="cache directory (results/data/preprocessed)")
    parser.add_argument("--case", nargs="+", action="extend", metavar="CASE",
                        help="only these cases (default: every case with status ok)")
    parser.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"),
                        help="resample to this spacing in mm (RAS axis order); default: native grid")
    parser.add_argument("--workers", type=int, default=1, metavar="W",
                        help="cases processed in parallel (default 1; each needs ~0.5 GB at full size)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild caches that are already complete")


def run(args: argparse.Namespace) -> int:
    import logging

    from brainmets.data.layout import STATUS_OK, load_cases
    from brainmets.data.preprocess import SOURCE_KEYS, preprocess_cases
    from brainmets.errors import BrainmetsError

    table = load_cases(args.cases, ok_only=False)
    if args.case:
        unknown = [case for case in args.case if case not in set(table["case"])]
        if unknown:
            raise BrainmetsError(f"case(s) {', '.join(unknown)} not in {args.cases}")
        table = table[table["case"].isin(args.case)]
        skipped = table[table["status"] != STATUS_OK]
        if len(skipped):
            reasons = "; ".join(f"{row.case}: {row.reason}" for row in skipped.itertuples())
            raise BrainmetsError(f"case(s) marked skipped in {args.cases}, cannot preprocess: {reasons}")
    table = table[table["status"] == STATUS_OK]
    if table.empty:
        raise BrainmetsError(f"no case with status {STATUS_OK} in {args.cases}")
    cases = {row["case"]: {key: row[key] for key in SOURCE_KEYS} for _, row in table.iterrows()}
    paths = preprocess_cases(cases, args.out_dir, spacing=args.spacing, workers=args.workers,
                             overwrite=args.overwrite)
    logging.getLogger(__name__).info("%d case(s) preprocessed into %s", len(paths), args.out_dir)
    return 0
