"""`brainmets postprocess`: choose minimum component volumes on the validation split, or apply them."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "remove small connected components: tune the minimum volumes on val, or apply a decision"
DESCRIPTION = (
    "`tune`: for each region (WT, TC, ET) choose, from --grid (mm^3), the minimum component volume that "
    "maximises the mean lesion-wise Dice over the cases of --split (validation only, unless --allow-test) "
    "of --pred-dir, and write the decision JSON. `apply`: remove the components below a decision's minima "
    "from every <case>.nii.gz of IN into OUT (removed WT components become background, TC ones SNFH, ET "
    "ones NETC: the map stays a valid BraTS label map)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    tune = actions.add_parser("tune", help="choose the minimum volumes on the validation split")
    tune.add_argument("--pred-dir", type=Path, required=True, help="predictions <case>.nii.gz of the split")
    tune.add_argument("--gt-dir", type=Path, required=True, help="ground truth (BraTS layout or flat -seg files)")
    tune.add_argument("--splits", type=Path, required=True, help="splits.tsv (case, split)")
    tune.add_argument("--split", default="val", help="split to tune on (default val)")
    tune.add_argument("--allow-test", action="store_true", help="allow --split test (the test split is then not held out)")
    tune.add_argument("--grid", type=float, nargs="+", required=True, metavar="MM3",
                      help="candidate minimum volumes (mm^3); 0 (no removal) is always a candidate")
    tune.add_argument("--out", type=Path, required=True, help="decision JSON to write")
    apply = actions.add_parser("apply", help="apply a decision to a folder of predictions")
    apply.add_argument("--decision", type=Path, required=True, help="decision JSON written by `tune`")
    apply.add_argument("--in-dir", type=Path, required=True, help="folder of <case>.nii.gz label maps")
    apply.add_argument("--out-dir", type=Path, required=True, help="folder to write the cleaned maps to")
    apply.add_argument("--subdirs", nargs="+", metavar="NAME",
                       help="postprocess IN/<NAME> into OUT/<NAME> for each NAME (e.g. the splits val test)")


def run(args: argparse.Namespace) -> int:
    from brainmets.errors import BrainmetsError
    from brainmets.inference.postprocess import apply_to_dir, read_decision, tune_on_split

    if args.action == "tune":
        from brainmets.data.splits import cases_in_split

        if args.split == "test" and not args.allow_test:
            raise BrainmetsError("tuning postprocessing on the test split leaks it; use --split val (or --allow-test)")
        decision = tune_on_split(args.pred_dir, args.gt_dir, cases_in_split(args.splits, args.split),
                                 args.split, args.grid, args.out)
        print(f"{args.out}: {decision['min_volume_mm3']} (chosen on {args.split})")
    else:
        decision = read_decision(args.decision)
        pairs = ([(args.in_dir / name, args.out_dir / name) for name in args.subdirs] if args.subdirs
                 else [(args.in_dir, args.out_dir)])
        for in_dir, out_dir in pairs:
            written = apply_to_dir(decision, in_dir, out_dir)
            print(f"{len(written)} prediction(s) postprocessed into {out_dir}")
    return 0
