"""`brainmets select`: choose the two-stage model's input subset from the modality study."""

from __future__ import annotations

import argparse

HELP = "choose the best modality subset from the modality study (writes a decision JSON)"
DESCRIPTION = (
    "Rank the modality-study subsets by the mean over seeds of the per-seed mean over regions of the "
    "per-region mean over cases of METRIC on SPLIT (Dice: higher is better; HD95: lower), and write the "
    "decision (chosen subset, metric, split, full ranking) as JSON. Selecting on test needs --allow-test "
    "and is recorded as a warning; --override fixes the subset (e.g. the paper's t1c+t1n+t2f) while still "
    "recording the ranking."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--study", default="modality", help="study directory (default: modality)")
    parser.add_argument("--model", default="unet", help="model directory inside the study (default: unet)")
    parser.add_argument("--metric", default="lesion_dice",
                        choices=["lesion_dice", "legacy_dice", "lesion_hd95", "legacy_hd95"],
                        help="metric to rank by (default: lesion_dice)")
    parser.add_argument("--split", default="val", choices=["val", "test"], help="split to rank on (default: val)")
    parser.add_argument("--regions", nargs="+", default=["WT", "TC", "ET"], metavar="REGION",
                        help="regions averaged into the score (default: WT TC ET)")
    parser.add_argument("--override", default=None, metavar="KEY",
                        help="fix the chosen subset (e.g. t1c+t1n+t2f); the ranking is still written")
    parser.add_argument("--allow-test", action="store_true",
                        help="permit --split test (recorded as a warning in the decision file)")
    parser.add_argument("--subsets", nargs="+", default=None, metavar="KEY",
                        help="subsets to rank (default: every subset directory on disk)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, metavar="K",
                        help="seeds to use (default: every seed<k> directory on disk)")
    parser.add_argument("--out", required=True, help="decision file, e.g. results/selection/modality.json")


def run(args: argparse.Namespace) -> int:
    from brainmets.decision import write_selection
    from brainmets.reporting.selection import select_subset

    decision = select_subset(
        args.results, study=args.study, model=args.model, metric=args.metric, split=args.split,
        regions=args.regions, override=args.override, allow_test=args.allow_test,
        subsets=args.subsets, seeds=args.seeds,
    )
    write_selection(decision, args.out)
    print(f"{decision['chosen_subset']}\t{args.out}")
    return 0
