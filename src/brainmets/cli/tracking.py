"""`brainmets tracking init`: create the MLflow store and experiments once, before training jobs."""

from __future__ import annotations

import argparse

HELP = "MLflow store management: `init` creates the store, experiments and parent runs before jobs start"
DESCRIPTION = (
    "init: create the tracking store (default: sqlite in <results>/mlflow; MLFLOW_TRACKING_URI or "
    "tracking.uri override it), one experiment per study (brainmets/<study>) and each study's parent run. "
    "Run it once before parallel training jobs: several jobs creating a new sqlite store or experiment at "
    "once crash or log into the Default experiment."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    init = sub.add_parser("init", help="create the store, experiments and parent runs (idempotent)")
    init.add_argument("--config", required=True, help="config.yaml (tracking and results sections)")
    init.add_argument("--results", default=None, help="results directory (default: the config's results)")
    init.add_argument("--study", action="append", default=None,
                      help="study to create (repeatable; default: modality, twostage, baselines)")


def run(args: argparse.Namespace) -> int:
    from brainmets.config import load_config
    from brainmets.tracking import DEFAULT_STUDIES, describe_failure, init_store, tracking_uri

    config = load_config(args.config)
    uri = tracking_uri(config, args.results)
    if uri is None:
        print("tracking is disabled (tracking.enabled: false): nothing to do")
        return 0
    from brainmets.errors import BrainmetsError

    try:
        ids = init_store(uri, args.study or DEFAULT_STUDIES)
    except Exception as exc:  # noqa: BLE001 - MLflow / SQLAlchemy / network errors, shown without traceback
        raise BrainmetsError(f"could not initialise the MLflow store at {uri}: {describe_failure(exc, uri)}") from exc
    for study, experiment_id in ids.items():
        print(f"{uri}: experiment brainmets/{study} (id {experiment_id}) ready")
    return 0
