"""`brainmets predict`: segment the cases of some splits with a trained model (or the two-stage pair)."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainmets.cli import config_override

HELP = "predict label maps for split(s) with a trained model, or the detector + segmentor two-stage model"
DESCRIPTION = (
    "Runs a trained segmentation model (single-pass sliding window) or, with --detector, the two-stage "
    "model (the detector scores every window, the segmentor runs on the windows it accepts) on the "
    "preprocessed cases of the given splits. Writes OUT_DIR/predictions/<split>/<case>.nii.gz (BraTS "
    "labels on the original grid and affine) and OUT_DIR/inference/<split>.tsv (time, windows, FLOPs). "
    "Settings come from the config's 'inference' section (overlap, detector_threshold, batch_size, blend, "
    "threshold, device). Existing predictions of the requested splits are rewritten. "
    "--evaluate-gt GT: then, in the same process, score each split's predictions against GT into "
    "OUT_DIR/metrics/<split>.tsv and <split>_lesions.tsv, the files `brainmets evaluate --cases-from SPLITS "
    "--split SPLIT` writes (the same function): the workflow saves an evaluation job per split this way. "
    "Several models (--model M1 M2 ... --out-dir O1 O2 ..., with --detector D1 D2 ...; zipped): each is "
    "predicted (and evaluated) into its own OUT_DIR in turn, as by its own command, in one process."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="config.yaml (its 'inference' section; optional)")
    parser.add_argument("--model", type=Path, nargs="+", required=True,
                        help="segmentation model.pt (the segmentor for --detector); several: one run each")
    parser.add_argument("--detector", type=Path, nargs="+",
                        help="detector model.pt: run the two-stage model; one per --model, in the same order")
    parser.add_argument("--cache", type=Path, required=True, help="preprocessed cache directory")
    parser.add_argument("--splits", type=Path, required=True, help="splits table (case, split)")
    parser.add_argument("--split", nargs="+", required=True, metavar="SPLIT", help="split(s) to predict, e.g. val test")
    parser.add_argument("--out-dir", type=Path, nargs="+", required=True,
                        help="run directory to write predictions/ and inference/ into; one per --model")
    parser.add_argument("--device", type=config_override("inference", "device"),
                        help="override inference.device (e.g. cpu or cuda:1)")
    add_evaluate_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """``--evaluate-gt`` and ``--evaluate-workers``: evaluate right after predicting (predict, train --predict)."""
    parser.add_argument("--evaluate-gt", type=Path, metavar="GT_DIR",
                        help="after predicting, score each split against this ground-truth root (BraTS or flat "
                        "layout) into OUT_DIR/metrics/<split>.tsv and <split>_lesions.tsv, as brainmets evaluate")
    parser.add_argument("--evaluate-workers", type=int, default=1, metavar="N",
                        help="with --evaluate-gt: cases evaluated in parallel (processes; default 1)")


def check_evaluate_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad evaluation request before any work (the ground truth is listed: cheap, and fails early)."""
    from brainmets.errors import BrainmetsError
    from brainmets.evaluation import find_gt_cases

    if args.evaluate_workers < 1:
        raise BrainmetsError(f"--evaluate-workers must be at least 1, got {args.evaluate_workers}")
    if args.evaluate_gt is not None:
        find_gt_cases(args.evaluate_gt)


def run(args: argparse.Namespace) -> int:
    from brainmets.cli import zipped
    from brainmets.config import load_config

    runs = zipped("--model", ("out_dir",), model=args.model, detector=args.detector, out_dir=args.out_dir)
    check_evaluate_arguments(args)
    config = load_config(args.config) if args.config is not None else None
    for model, detector, out_dir in runs:
        predict_and_report(config, model, args.cache, args.splits, args.split, out_dir,
                           detector=detector, device=args.device, progress=not args.no_progress,
                           evaluate_gt=args.evaluate_gt, evaluate_workers=args.evaluate_workers)
    return 0


def predict_and_report(config: dict | None, model: Path, cache: Path, splits_table: Path, splits: list[str],
                       out_dir: Path, detector: Path | None = None, device: str | None = None,
                       progress: bool = True, evaluate_gt: Path | None = None, evaluate_workers: int = 1) -> None:
    """Predict ``splits`` into ``out_dir`` and print one summary line per split (also `brainmets train --predict`).

    With ``evaluate_gt``, each split's predictions are then scored into ``out_dir/metrics/``
    (:func:`brainmets.evaluation.evaluate_run_split`, the code of `brainmets evaluate`).
    """
    import dataclasses

    from brainmets.inference import InferenceSettings, predict_splits

    settings = InferenceSettings.from_config(config)
    if device:
        settings = dataclasses.replace(settings, device=device)
    tables = predict_splits(
        model_path=model,
        cache_dir=cache,
        splits_path=splits_table,
        splits=splits,
        out_dir=out_dir,
        settings=settings,
        detector_path=detector,
        config=config,
        progress=progress,
    )
    for split, table in tables.items():
        print(
            f"{split}: {len(table)} cases, {table['seconds'].sum():.1f} s, "
            f"mean kept fraction {table['fraction_kept'].mean():.3f}, "
            f"{table['flops'].sum() / 1e12:.3f} TFLOP (single-pass {table['flops_single_pass'].sum() / 1e12:.3f})"
        )
    if evaluate_gt is not None:
        from brainmets.cli.evaluate import report_metrics
        from brainmets.evaluation import evaluate_run_split

        for split in tables:
            df, metrics = evaluate_run_split(out_dir, split, evaluate_gt, splits_table, workers=evaluate_workers,
                                             progress=progress)
            report_metrics(df, metrics)
