"""`brainmets ensemble`: a seed ensemble's Table 2 rows (no mirroring, mirroring, + tuned postprocessing) in one job."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainmets.cli import config_override

HELP = "a seed ensemble's Table 2 rows: val and test without and with mirroring, postprocessing tuned on val"
DESCRIPTION = (
    "Segments the val and test cases of COHORT (raw BraTS-layout cases, as `brainmets segment` does) with "
    "the ensemble of the --model runs (with --detector: two-stage members), without and with mirroring "
    "from the same passes, into OUT/mean/predictions/<split>/ and OUT/mirror/predictions/<split>/; "
    "chooses the minimum component volumes from --grid on the mirrored VALIDATION predictions only "
    "(OUT/postprocessing.json, as `brainmets postprocess tune`); applies them into "
    "OUT/mirror_pp/predictions/<split>/; and scores every variant and split against COHORT's ground truth "
    "into OUT/<variant>/metrics/<split>.tsv and <split>_lesions.tsv (the files `brainmets evaluate` "
    "writes). With --config, its 'postprocessing' minimum volumes (those every prediction of the study gets) "
    "are applied to the mean/ and mirror/ rows after the tuning, which sees them untouched. "
    "The study's ensembles.smk runs it once per ensemble."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cohort", type=Path, help="folder of the raw case folders, with their -seg files")
    parser.add_argument("--model", "-m", type=Path, nargs="+", required=True, metavar="RUN",
                        help="the ensemble's run directories (one per seed)")
    parser.add_argument("--detector", type=Path, nargs="+", default=[], metavar="RUN",
                        help="detector run(s), one per --model run: two-stage members")
    parser.add_argument("--splits", type=Path, required=True, metavar="TSV", help="splits table (case, split)")
    parser.add_argument("--split", nargs="+", default=["val", "test"], metavar="SPLIT",
                        help="splits to predict and evaluate (default val test; val is the tuning split)")
    parser.add_argument("--grid", type=float, nargs="+", required=True, metavar="MM3",
                        help="candidate minimum volumes (mm^3); 0 (no removal) is always a candidate")
    parser.add_argument("--out", "-o", type=Path, required=True, help="the ensemble's directory")
    parser.add_argument("--config", type=Path, help="config.yaml whose 'inference' and 'postprocessing' sections to use (optional)")
    parser.add_argument("--device", type=config_override("inference", "device"),
                        help="override inference.device, e.g. cpu or cuda:1")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="cases evaluated in parallel (processes; default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from brainmets.cli import inference_settings
    from brainmets.errors import BrainmetsError
    from brainmets.inference.ensemble import ensemble_rows

    if args.workers < 1:
        raise BrainmetsError(f"--workers must be at least 1, got {args.workers}")
    config, settings = inference_settings(args.config, args.device)
    decision = ensemble_rows(args.model, args.detector, settings, args.cohort, args.splits, args.split, args.out,
                             args.grid, min_volume_mm3=config["postprocessing"]["min_volume_mm3"] if config else None,
                             workers=args.workers, progress=not args.no_progress)
    print(f"{args.out}: {', '.join(args.split)} without and with mirroring, postprocessing "
          f"{decision['min_volume_mm3']} (chosen on {decision['chosen_on']}), all evaluated")
    return 0
