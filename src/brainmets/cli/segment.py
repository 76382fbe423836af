"""`brainmets segment`: segment new patients (no labels needed) with a trained run, an ensemble or a two-stage pair."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainmets.cli import config_override
from brainmets.constants import CHECKPOINT_FILES, MODALITIES

HELP = "segment new cases (a folder of cases, one case folder, or four files) with trained model(s)"
DESCRIPTION = (
    "Segments unlabelled cases with trained runs: INPUT is a folder of BraTS-layout case folders "
    "(<case>/<case>-t1c.nii.gz ...), one case folder, or the sequences given with --t1n --t1c --t2w --t2f. "
    "--model names one run directory or several (an ensemble: probabilities are averaged); with "
    "--detector, one detector run per --model run (the two-stage model). Each run contributes the weights "
    "inference.checkpoint names, as in the study's predictions: best.pt (best, the default) or model.pt "
    "(final); --checkpoint overrides the config. The sequences "
    "needed and the preprocessing come from each run's model card (model.json, built from the run's files "
    "when absent); only the sequences the model uses are required. Writes OUT/<case>.nii.gz (BraTS labels "
    "1 NETC, 2 SNFH, 3 ET on the case's own grid), OUT/model.json (what ran), OUT/brats_labels.ctbl (3D "
    "Slicer colours) and with --uncertainty OUT/<case>_uncertainty.nii.gz; all or nothing: a failing case "
    "leaves OUT as it was."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", type=Path, help="folder of case folders, or one case folder")
    for modality in MODALITIES:
        parser.add_argument(f"--{modality}", type=Path, metavar="FILE", help=f"the case's {modality} NIfTI")
    parser.add_argument("--case", help="case name with explicit files (default: from the file names)")
    parser.add_argument("--model", "-m", type=Path, nargs="+", required=True, metavar="RUN",
                        help="run directory of a finished training; several make an ensemble")
    parser.add_argument("--detector", type=Path, nargs="+", default=[], metavar="RUN",
                        help="detector run(s), one per --model run: run the two-stage model")
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                        help="test-time augmentation: average over the mirror images (default on; all 8 "
                        "unless --mirror-axes or the config's inference.mirror_axes says otherwise)")
    parser.add_argument("--mirror-axes", type=int, nargs="+", choices=(0, 1, 2), metavar="AXIS",
                        help="override inference.mirror_axes: the axes mirroring flips (0 x, 1 y, 2 z), "
                        "every combination of them: 2^k images")
    post = parser.add_mutually_exclusive_group()
    post.add_argument("--postprocessing", type=Path, metavar="JSON",
                      help="remove small components with this decision (postprocessing.json); default: the one "
                      "the model cards record, if any")
    post.add_argument("--no-postprocessing", action="store_true",
                      help="do not remove small components, even when the model cards record a decision")
    parser.add_argument("--splits", type=Path, metavar="TSV",
                        help="with --split: segment only the cases of these splits (case, split table), "
                        "each into OUT/<split>/")
    parser.add_argument("--split", nargs="+", metavar="SPLIT", help="splits of --splits to segment")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write <case>_uncertainty.nii.gz: the members' standard deviation (ensembles)")
    parser.add_argument("--config", type=Path, help="config.yaml whose 'inference' section to use (optional)")
    parser.add_argument("--checkpoint", choices=tuple(CHECKPOINT_FILES),
                        help="override inference.checkpoint: each run's best.pt (best) or model.pt (final)")
    parser.add_argument("--device", type=config_override("inference", "device"),
                        help="override inference.device, e.g. cpu or cuda:1")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from brainmets.cli import inference_settings
    from brainmets.errors import BrainmetsError
    from brainmets.inference.segment import cases_of_splits, explicit_case, find_cases, load_model, segment

    files = {modality: getattr(args, modality) for modality in MODALITIES}
    explicit = any(path is not None for path in files.values())
    if explicit == (args.input is not None):
        raise BrainmetsError("give either INPUT (a folder) or the sequence files (--t1n --t1c --t2w --t2f), not both")
    if args.case and not explicit:
        raise BrainmetsError("--case names a case given by its files; a folder's cases are named by their folders")
    config, settings = inference_settings(args.config, args.device)
    if args.checkpoint:
        settings = dataclasses.replace(settings, checkpoint=args.checkpoint)
    if args.mirror_axes:
        if len(set(args.mirror_axes)) != len(args.mirror_axes):
            raise BrainmetsError(f"--mirror-axes {' '.join(map(str, args.mirror_axes))}: each axis once")
        settings = dataclasses.replace(settings, mirror_axes=sorted(args.mirror_axes))
    if (args.splits is None) != (args.split is None):
        raise BrainmetsError("--splits and --split go together: the table of splits and the split(s) to segment")
    postprocessing = True
    if args.no_postprocessing:
        postprocessing = False
    elif args.postprocessing:
        from brainmets.inference.postprocess import read_decision

        postprocessing = read_decision(args.postprocessing)
    model = load_model(args.model, args.detector, settings=settings, mirror=args.mirror,
                       postprocessing=postprocessing)
    cases = explicit_case(files, args.case) if explicit else find_cases(args.input)
    if args.splits is None:
        jobs = {args.out: cases}
    else:
        jobs = {args.out / split: selected
                for split, selected in cases_of_splits(cases, args.splits, args.split, args.input).items()}
    for out, selected in jobs.items():
        written = segment(selected, model, out, uncertainty=args.uncertainty,
                          source=args.input or "", progress=not args.no_progress)
        print(f"{len(written)} case(s) segmented into {out}")
    return 0
