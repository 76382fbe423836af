"""`brainmets split`: seeded train/val/test split stratified by metastasis count."""

from __future__ import annotations

import argparse

HELP = "split the indexed cases into train/val/test, stratified by metastasis count"
DESCRIPTION = (
    "Draw a seeded split of the status=ok cases of a case table, stratified by the number of "
    "metastases (0-1, 2-3, 4-9, >=10; small strata merged), or validate a given split file. "
    "Sizes: each split but the last gets floor(fraction x n) cases, the last takes the rest "
    "(238 cases at 0.85 0.05 0.10 -> 202/11/25, the paper's split)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", required=True, help="case table written by `brainmets index`")
    parser.add_argument("--out", required=True, help="split table to write: columns case, split")
    parser.add_argument(
        "--fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
        default=(0.85, 0.05, 0.10), help="fractions of train, val, test (default 0.85 0.05 0.10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--split-file", default=None,
        help="use this split (TSV/CSV with columns case, split) instead of drawing one; "
        "it must assign every indexed ok case exactly once",
    )
    parser.add_argument(
        "--on-bad-case", choices=("fail", "skip"), default="fail",
        help="with --split-file: fail (default) on listed cases the index lacks and on unlisted "
        "indexed cases, or skip them with a warning (use the listed rest)",
    )


def run(args: argparse.Namespace) -> int:
    from brainmets.data.layout import load_cases
    from brainmets.data.splits import create_split, split_summary

    split = create_split(args.cases, args.out, fractions=args.fractions, seed=args.seed,
                         split_file=args.split_file, on_bad_case=args.on_bad_case)
    how = f"from {args.split_file}" if args.split_file else f"seed {args.seed}"
    print(f"wrote {args.out} ({how}); cases per metastasis-count stratum:")
    print(split_summary(split, load_cases(args.cases)).to_string())
    return 0
