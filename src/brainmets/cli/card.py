"""`brainmets card`: (re)write a trained run's model card, model.json."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write RUN/model.json, the model card of a trained run (network, inputs, preprocessing, metrics)"
DESCRIPTION = (
    "Builds each run's model card from the run's own files: model.pt (network, modality subset, patch), "
    "the digests of model.pt and best.pt, config.yaml (training settings and their digest; its cache gives "
    "the preprocessing spacing), model_info.json and metrics/<split>.tsv when present; writes RUN/model.json. "
    "`brainmets segment` reads it and refuses a card that does not match the weights it uses."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directory holding model.pt")
    spacing = parser.add_mutually_exclusive_group()
    spacing.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"),
                         help="the preprocessing spacing (mm), when the run's training cache is gone")
    spacing.add_argument("--native", action="store_true",
                         help="the cases were preprocessed on their native grid (when the cache is gone)")
    parser.add_argument("--postprocessing", type=Path, metavar="JSON",
                        help="record this postprocessing decision (postprocessing.json, chosen on the "
                        "validation split) in the card; `brainmets segment` then applies it")


def run(args: argparse.Namespace) -> int:
    from brainmets.inference.card import write_run_card

    spacing = args.spacing if args.spacing else (None if args.native else "cache")
    for run_dir in args.runs:
        print(write_run_card(run_dir, spacing, args.postprocessing))
    return 0
