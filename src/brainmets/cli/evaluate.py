"""`brainmets evaluate`: legacy and BraTS 2023 lesion-wise metrics of a prediction folder."""

from __future__ import annotations

import argparse

HELP = "score predictions against ground truth (legacy + BraTS 2023 lesion-wise Dice/HD95)"
DESCRIPTION = (
    "Score <pred-dir>/<case>.nii.gz against ground truth in BraTS layout "
    "(<gt-dir>/<case>/<case>-seg.nii.gz) or flat (<gt-dir>/<case>-seg.nii.gz). Writes one row per "
    "case and region (WT, TC, ET, NETC, SNFH) with legacy and lesion-wise Dice/HD95 computed as "
    "the official BraTS 2023 code does with BraTS-MET settings. A .csv output is comma-separated, "
    "anything else tab-separated."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred-dir", required=True, help="folder of <case>.nii.gz label maps")
    parser.add_argument("--gt-dir", required=True, help="ground-truth root (BraTS or flat layout)")
    parser.add_argument("--out", required=True, help="per case x region table (.csv or .tsv)")
    parser.add_argument("--lesions-out", help="per-lesion table (GT lesions and false-positive components)")
    parser.add_argument("--cases-from", help="TSV/CSV with columns case, split: evaluate only its cases")
    parser.add_argument("--split", help="with --cases-from: keep only the rows of this split")
    parser.add_argument(
        "--missing-as-empty", action="store_true",
        help="score a GT case without prediction as an empty prediction (as challenges do) instead of failing",
    )
    parser.add_argument("--workers", type=int, default=1, help="cases evaluated in parallel (processes)")


def run(args: argparse.Namespace) -> int:
    from brainmets.errors import BrainmetsError
    from brainmets.evaluation import cases_from_table, evaluate_to_files

    if args.split is not None and args.cases_from is None:
        raise BrainmetsError("--split needs --cases-from")
    if args.workers < 1:
        raise BrainmetsError(f"--workers must be at least 1, got {args.workers}")
    cases = cases_from_table(args.cases_from, args.split) if args.cases_from else None
    df = evaluate_to_files(
        args.pred_dir, args.gt_dir, args.out, args.lesions_out, cases=cases,
        missing="empty" if args.missing_as_empty else "error", workers=args.workers,
    )
    report_metrics(df, args.out)
    return 0


def report_metrics(df, out) -> None:
    """Print how many cases were scored into ``out`` and the mean Dice/HD95 per region (also after predicting)."""
    n_cases = df["case"].nunique()
    print(f"evaluated {n_cases} case(s) -> {out}")
    if n_cases:
        means = df.groupby("region", sort=False)[["legacy_dice", "lesion_dice", "lesion_hd95"]].mean()
        print(means.round(4).to_string())
