"""`brainmets train`: train one model on one modality subset with one seed, or several in turn (resumable)."""

from __future__ import annotations

import argparse

from brainmets.cli.predict import add_evaluate_arguments, check_evaluate_arguments
from brainmets.constants import CHECKPOINT_FILES
from brainmets.stopping import DEFAULT_WARNING_SIGNAL, EXIT_RESUME

HELP = "train one model (segmentor, U-Net, baseline or detector) on one subset and seed(s); resumable"
DESCRIPTION = (
    "Train one run from the preprocessed cache and write RUN_DIR/{config.yaml, history.tsv, checkpoint.pt, "
    "best.pt, model.pt}. Running the same command again resumes from RUN_DIR/checkpoint.pt; if "
    "RUN_DIR/model.pt exists the run is complete and nothing is done. The model's task (segmentation or "
    "detection) follows from its registry entry (models.NAME): 'task' if given, else detection for a DenseNet. "
    "Settings: the config's training section (keys and defaults: the config schema). "
    "Stopping: on SIGTERM (time limit, scancel, preemption), SIGINT (Ctrl-C) or the --warning-signal, the "
    "step in progress finishes, RUN_DIR/checkpoint.pt and history.tsv are written at that step and the command "
    f"exits {EXIT_RESUME}; a second Ctrl-C stops at once (the last checkpoint stays). "
    f"Exit status: 0 trained (or already complete); {EXIT_RESUME} stopped before the end, not finished: run the same "
    "command again to resume; 2 error in the input or settings (message on stderr); 130 interrupted. "
    "Chains of batch jobs (--attempt, Snakemake's attempt number): an error writes RUN_DIR/failed.txt; a later "
    "attempt of the same chain (--attempt 2 or more) then stops at once with that error instead of training "
    "again, so a chain sized for a long training does not loop on a bug or bad input. Attempt 1 (a new "
    "Snakemake run, e.g. after the fix) removes the record and trains. "
    "--predict SPLIT...: once the run is complete (trained now or before), predict those splits in the same "
    "process with the weights --predict-weights names, writing what `brainmets predict --out-dir RUN_DIR` "
    "writes (RUN_DIR/predictions/<split>/, RUN_DIR/inference/<split>.tsv): the workflow's single-pass runs "
    "save a second start-up of torch and MONAI this way. A run stopped before the end predicts nothing. "
    "--evaluate-gt GT (with --predict): then also score each predicted split against GT, writing what "
    "`brainmets predict --evaluate-gt` writes (RUN_DIR/metrics/<split>.tsv, <split>_lesions.tsv); the "
    "ground-truth folder is checked before training. "
    "Several seeds (--seed S1 S2 ... --out-dir D1 D2 ..., zipped; --detector too when given, and --subset when "
    "it names one subset per run): the runs are "
    "trained one after the other in this process, each exactly as its own one-seed command (same weights, "
    "files, MLflow run and failure record; predicted right after it is trained), so torch, MONAI and the "
    "rest start once. A stop signal stops the run in progress as above and starts no later seed (exit "
    f"{EXIT_RESUME}); an error stops there too. Running the same command again skips the complete runs "
    "(they still predict with --predict), resumes the stopped one and trains the rest."
)

#: The error that ended a training, in its run directory, for the later jobs of the same chain.
FAILURE_RECORD = "failed.txt"
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config.yaml (validated; training and models sections)")
    parser.add_argument("--study", required=True, help="study name (modality, twostage, baselines): MLflow experiment")
    parser.add_argument("--model", required=True, help="registry entry under models: in the config (e.g. unet)")
    parser.add_argument("--subset", nargs="+", required=True,
                        help="canonical subset key (e.g. t1c+t1n+t2f), 'selected' (with --selection) "
                        "or @<selection json>; one for every run, or one per --seed (several subsets in one "
                        "job: modality_study.subsets_per_job)")
    parser.add_argument("--seed", type=int, nargs="+", required=True,
                        help="seed of weights, sampling and augmentation; several: one run each, in turn")
    parser.add_argument("--cache", required=True, help="preprocessed cache directory (<case>.npy + <case>.json)")
    parser.add_argument("--splits", required=True, help="splits table (columns case, split)")
    parser.add_argument("--out-dir", nargs="+", required=True,
                        help="run directory to write (and resume from); one per --seed, in the same order")
    parser.add_argument("--selection", default=None, help="modality decision JSON for --subset selected")
    parser.add_argument("--detector", nargs="+", default=None,
                        help="trained detector model.pt: train the segmentor only on patches it accepts; "
                        "one per --seed, in the same order")
    parser.add_argument("--iterations", type=int, default=None, help="override the task's iteration budget")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (overrides training.threads)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch jobs)")
    parser.add_argument("--warning-signal", default=DEFAULT_WARNING_SIGNAL, metavar="SIGNAL",
                        help="early-warning signal that stops the run like SIGTERM, e.g. sent by SLURM ahead of "
                        f"the time limit with sbatch --signal (default {DEFAULT_WARNING_SIGNAL}; 'none': not caught)")
    parser.add_argument("--attempt", type=int, default=1, metavar="N",
                        help="which job of a chain this is (Snakemake's attempt, 1 = first): from 2 on, an error "
                        f"recorded in RUN_DIR/{FAILURE_RECORD} by an earlier job is raised again without training")
    parser.add_argument("--predict", nargs="+", metavar="SPLIT", default=None,
                        help="after training, predict these splits (e.g. val test) into RUN_DIR, as brainmets predict")
    parser.add_argument("--predict-weights", choices=sorted(CHECKPOINT_FILES.values()), default="best.pt",
                        help="with --predict: the weights to predict with (the config's inference.checkpoint; "
                        "default best.pt)")
    add_evaluate_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainmets.config import load_config
    from brainmets.errors import BrainmetsError

    # A bad config or evaluation request fails here, before a run directory is touched (and
    # costs nothing to repeat), not after hours of training.
    runs = _runs(args)
    if args.evaluate_gt is not None and not args.predict:
        raise BrainmetsError("--evaluate-gt needs --predict (it scores the predictions of those splits)")
    check_evaluate_arguments(args)
    config = load_config(args.config)
    records = [Path(run.out_dir) / FAILURE_RECORD for run in runs]
    if args.attempt > 1:
        for record in records:
            if record.is_file():
                raise BrainmetsError(f"not training again: an earlier job of this chain failed (attempt "
                                     f"{args.attempt}; fix the cause, then start Snakemake again). Its error "
                                     f"({record}):\n{record.read_text().strip()}")
    for record in records:
        record.unlink(missing_ok=True)
    for index, (run, record) in enumerate(zip(runs, records)):
        if _train_recorded(run, config, record) == EXIT_RESUME:
            one_subset = len(args.subset) == 1
            later = [f"seed {later_run.seed}" if one_subset else f"{later_run.subset} seed {later_run.seed}"
                     for later_run in runs[index + 1:]]
            if later:
                print(f"not started: {', '.join(later)} (the same command again trains them after resuming "
                      "the stopped run)")
            return EXIT_RESUME
    return 0


def _runs(args: argparse.Namespace) -> list[argparse.Namespace]:
    """One namespace per run (``subset``, ``seed``, ``out_dir``, ``detector`` single values), the lists zipped.

    One ``--subset`` is every run's; several are one per run, and then a seed may repeat across
    subsets (each (subset, seed) once).
    """
    from brainmets.cli import zipped
    from brainmets.errors import BrainmetsError

    if len(args.subset) == 1:
        runs = zipped("--seed", ("seed", "out_dir"), seed=args.seed, out_dir=args.out_dir, detector=args.detector)
        runs = [(args.subset[0], *run) for run in runs]
    else:
        runs = zipped("--seed", ("out_dir",), subset=args.subset, seed=args.seed, out_dir=args.out_dir,
                      detector=args.detector)
        pairs = [(subset, seed) for subset, seed, _, _ in runs]
        repeated = sorted({f"{subset} seed {seed}" for subset, seed in pairs if pairs.count((subset, seed)) > 1})
        if repeated:
            raise BrainmetsError(f"--subset/--seed: {', '.join(repeated)} given twice (one run each)")
    return [argparse.Namespace(**{**vars(args), "subset": subset, "seed": seed, "out_dir": out_dir,
                                  "detector": detector})
            for subset, seed, out_dir, detector in runs]


def _train_recorded(args: argparse.Namespace, config: dict, record) -> int:
    """Train (and predict) one run; an error is written to its failure record, then raised."""
    from brainmets.errors import BrainmetsError
    from brainmets.io import write_text

    try:
        return _train(args, config)
    except Exception as exc:
        # Only errors Python sees: a kill (node failure, out of memory, time limit) leaves no record
        # and the next job of the chain resumes from the checkpoint. An error before the run
        # directory exists (a bad request) is cheap to repeat and must not create it.
        if record.parent.is_dir():
            try:
                write_text(record,
                           f"{exc}\n" if isinstance(exc, BrainmetsError) else f"{type(exc).__name__}: {exc}\n")
            except (BrainmetsError, OSError):
                pass  # e.g. the disk is full: the original error below is the one to report
        raise


def _train(args: argparse.Namespace, config: dict) -> int:
    from pathlib import Path

    from brainmets.decision import resolve_subset
    from brainmets.training.loop import RunRequest, train

    subset = resolve_subset(args.subset, args.selection)
    request = RunRequest(
        study=args.study, model=args.model, subset=subset, seed=args.seed, cache_dir=Path(args.cache),
        splits=Path(args.splits), out_dir=Path(args.out_dir),
        detector=Path(args.detector) if args.detector else None, iterations=args.iterations,
        threads=args.threads, subset_alias=args.subset if args.subset != subset else None,
    )
    result = train(config, request, progress=not args.no_progress, warning_signal=args.warning_signal)
    if result.status == "exists":
        print(f"{Path(args.out_dir) / 'model.pt'} exists: run already trained, nothing to do")
    elif result.status == "stopped":
        print(f"stopped {args.model} on {subset}, seed {args.seed} at iteration {result.iteration} by "
              f"{result.signal}: not finished; run the same command again to resume from "
              f"{Path(args.out_dir) / 'checkpoint.pt'}")
        return EXIT_RESUME
    else:
        resumed = f" (resumed at iteration {result.start_iteration})" if result.start_iteration else ""
        print(f"trained {args.model} on {subset}, seed {args.seed}: {result.iteration} iterations{resumed}; "
              f"wrote {Path(args.out_dir) / 'model.pt'}")
    if args.predict:
        from brainmets.cli.predict import predict_and_report

        predict_and_report(config, Path(args.out_dir) / args.predict_weights, Path(args.cache), Path(args.splits),
                           args.predict, Path(args.out_dir), progress=not args.no_progress,
                           evaluate_gt=args.evaluate_gt, evaluate_workers=args.evaluate_workers)
    return 0
