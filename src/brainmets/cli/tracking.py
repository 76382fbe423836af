"""`brainmets tracking init | sync`: the MLflow store before training jobs, and the outcomes after evaluation."""

from __future__ import annotations

import argparse

HELP = ("MLflow store management: `init` creates the store, experiments and parent runs before jobs start; "
        "`sync` adds every run's outcome and each study's summary once the results exist")
DESCRIPTION = (
    "init: create the tracking store (default: sqlite in <results>/mlflow; MLFLOW_TRACKING_URI or "
    "tracking.uri override it), one experiment per study (brainmets/<study>) and each study's parent run. "
    "Run it once before parallel training jobs: several jobs creating a new sqlite store or experiment at "
    "once crash or log into the Default experiment. "
    "sync: log the validation and test outcome of every evaluated run (metrics/<split>.tsv, "
    "inference/<split>.tsv) into its training run, the two-stage model's into a run of its own, and the "
    "selection decision, tables and figures into the study parents. Idempotent; run it once after the tables."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    init = sub.add_parser("init", help="create the store, experiments and parent runs (idempotent)")
    sync = sub.add_parser("sync", help="log outcomes and study summaries of a results directory (idempotent)")
    for action in (init, sync):
        action.add_argument("--config", required=True,
                            help="config.yaml (tracking, results and, for sync, selection sections)")
        action.add_argument("--results", default=None, help="results directory (default: the config's results)")
        action.add_argument("--study", action="append", default=None,
                            help="study (repeatable; default: modality, twostage, baselines)")


def run(args: argparse.Namespace) -> int:
    from brainmets.config import load_config
    from brainmets.errors import BrainmetsError
    from brainmets.tracking import DEFAULT_STUDIES, describe_failure, init_store, runs_table_path, tracking_uri

    config = load_config(args.config)
    uri = tracking_uri(config, args.results)
    if uri is None:
        print("tracking is disabled (tracking.enabled: false): nothing to do")
        return 0
    studies = args.study or DEFAULT_STUDIES
    if args.action == "sync":
        return _sync(uri, args.results or config["results"], config["selection"], studies)
    try:
        ids = init_store(uri, studies)
    except Exception as exc:  # noqa: BLE001 - MLflow / SQLAlchemy / network errors, shown without traceback
        raise BrainmetsError(f"could not initialise the MLflow store at {uri}: {describe_failure(exc, uri)}") from exc
    for study, experiment_id in ids.items():
        print(f"{uri}: experiment brainmets/{study} (id {experiment_id}) ready; "
              f"runs table in the UI: <server>{runs_table_path(experiment_id)}")
    return 0


def _sync(uri: str, results: str, selection, studies) -> int:
    from brainmets.errors import BrainmetsError
    from brainmets.tracking import describe_failure
    from brainmets.tracking_sync import summary_frame, sync_results

    try:
        report = sync_results(uri, results, selection, studies)
    except BrainmetsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise BrainmetsError(f"could not sync {results} into the MLflow store at {uri}: "
                             f"{describe_failure(exc, uri)}") from exc
    table = summary_frame(report)
    print(table.to_string(index=False))
    missing = table[table["run_id"].isna()]
    evaluated = int((table["metrics"] > 0).sum())
    print(f"{uri}: {evaluated} of {len(table)} runs have an outcome; {len(missing)} without an MLflow run")
    return 0
