"""`brainmets index`: validate a BraTS-MET cohort and write the case table."""

from __future__ import annotations

import argparse

HELP = "validate a BraTS-MET cohort and write the case table (cases.tsv)"
DESCRIPTION = (
    "Check every case under ROOT (<root>/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz): "
    "files present and readable, one voxel grid per case, finite non-empty images, "
    "labels in {0,1,2,3}; count lesions (26-connected) and measure volumes. "
    "With --on-bad-case fail (default) every bad case is reported and the table is not written. "
    "--unlabelled: a cohort without -seg files; everything else is checked the same, the label "
    "columns stay empty."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="cohort root: one directory per case")
    parser.add_argument("--out", required=True, help="case table to write (TSV; CSV if it ends in .csv)")
    parser.add_argument(
        "--on-bad-case", choices=("fail", "skip"), default="fail",
        help="fail: list all bad cases and write nothing (default); "
        "skip: write the table with bad cases as status=skipped and their reason",
    )
    parser.add_argument(
        "--unlabelled", action="store_true",
        help="cases without segmentation (to segment, not to train on): check the four sequences only",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from brainmets.data.layout import STATUS_OK, index_cohort
    from brainmets.io import write_table

    table = index_cohort(args.root, on_bad_case=args.on_bad_case, workers=args.workers,
                         progress=not args.no_progress, labelled=not args.unlabelled)
    write_table(table, args.out)
    skipped = table[table["status"] != STATUS_OK]
    print(f"indexed {len(table)} cases in {args.root}: {len(table) - len(skipped)} ok, "
          f"{len(skipped)} skipped -> {args.out}")
    for reason in skipped["reason"]:
        print(f"  skipped {reason}")
    return 0
