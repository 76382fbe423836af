"""MLflow tracking of training runs: a window on the results, never their keeper.

Files are the truth (DESIGN.md): a training job writes its history, config,
checkpoint and weights whatever happens here. This module mirrors them into
MLflow and is built around the failure modes measured on this project
(../shared/notes/mlflow.md):

* **Where.** ``MLFLOW_TRACKING_URI`` when set (cluster jobs point it at one
  ``mlflow server``), else config ``tracking.uri``, else one sqlite store per
  results directory, ``sqlite:///<abs results>/mlflow/mlflow.db``, with
  artifacts in ``<results>/mlflow/artifacts``. ``tracking.enabled: false``
  turns tracking off.
* **Races.** Creating a new sqlite database from several jobs at once crashes
  most of them, and two jobs creating one experiment can drop a run into
  "Default". So :func:`init_store` (``brainmets tracking init``) creates the
  database, one experiment per study (``brainmets/<study>``) and the study's
  parent run once, before any training job starts; jobs start their runs with
  an explicit experiment id. If a job still finds no parent (init skipped), it
  creates one and then converges on the oldest parent, deleting its own
  duplicate, so concurrent jobs end up under one parent.
* **Structure.** One parent run per study; one child run per (model, subset,
  seed) tagged ``mlflow.parentRunId``, ``study``, ``model``, ``subset``,
  ``seed``, ``slurm_job_id``, ``run_dir`` (and ``subset_alias`` for the
  modality study's choice, named ``<model>/selected(<subset>)/seed<k>``). A
  rerun of the same run directory (a resumed job) reopens its child run
  instead of adding another. The parent stays RUNNING until
  ``brainmets tracking sync`` (brainmets.tracking_sync) adds the outcomes and
  the study's summary at the end of the workflow.
* **Opening the runs table.** MLflow 3.17's UI opens an experiment on its
  GenAI overview (traces) unless its "Model training" switch is on; the switch
  is the URL's ``workflowType=machine_learning`` or a choice the browser
  remembers. Its experiment-kind tag is no longer what the page follows (seen
  in a headless Chromium), but experiments still carry
  ``mlflow.experimentKind = custom_model_development`` (:data:`EXPERIMENT_TAGS`)
  for the MLflow versions and clients that read it. :func:`runs_table_path`
  is the URL part that opens the runs table.
* **Outages.** HTTP retries and timeouts are bounded (``MLFLOW_HTTP_REQUEST_*``
  defaults set below unless the environment already sets them: 2 retries,
  backoff factor 1, 10 s timeout, so an unreachable server costs seconds, not
  the ~4 minutes of MLflow's defaults). The first failure logs one warning and
  disables tracking for the rest of the run (tests/tracking measures and
  checks this against a real server: unreachable, killed mid-run). A server
  that refuses the Host header (403; ``mlflow server --allowed-hosts``) gets a
  warning naming the fix. Async logging stays off (it lost data under load);
  metrics go in batches (``MlflowClient.log_batch``).
* ``mlflow`` is imported lazily (it costs ~2 s); checkpoints are not logged
  as models (``mlflow.pytorch.log_model`` costs ~8 s per call).
"""

from __future__ import annotations

import logging
import math
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

logger = logging.getLogger(__name__)

#: Studies whose experiments :func:`init_store` creates by default.
DEFAULT_STUDIES: tuple[str, ...] = ("modality", "twostage", "baselines")

#: Environment defaults applied before MLflow is imported (existing values win).
ENV_DEFAULTS: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
}

#: Tags of every study experiment: the kind MLflow 3's UI reads to show the runs table, not GenAI traces.
EXPERIMENT_TAGS: dict[str, str] = {"mlflow.experimentKind": "custom_model_development"}
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_VALUE = 6000


def experiment_name(study: str) -> str:
    return f"brainmets/{study}"


def run_name(model: str, subset: str, seed: int | str, alias: str | None = None) -> str:
    """``segmentor/t1c+t2w/seed0``, or ``segmentor/selected(t1c+t2w)/seed0`` for the modality study's choice."""
    shown = f"{alias}({subset})" if alias else subset
    return f"{model}/{shown}/seed{seed}"


def runs_table_path(experiment_id: str) -> str:
    """What follows the server's address in a URL that opens the experiment's runs table (module docstring)."""
    return f"/#/experiments/{experiment_id}?workflowType=machine_learning"


def parent_description(study: str) -> str:
    """The parent run's note (``mlflow.note.content``) until ``brainmets tracking sync`` writes the summary."""
    return (f"Study **{study}**: one child run per trained model, subset and seed. Outcomes (val/test "
            "Dice and HD95, FP per patient, seconds per case) and the study's summary (selection, tables, "
            "figures) are added by `brainmets tracking sync` at the end of the workflow.")


def configure_environment() -> None:
    """Set the bounded-retry / no-telemetry defaults (see module docstring) unless already set."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def tracking_uri(config: Mapping[str, Any], results_dir: str | Path | None = None) -> str | None:
    """The tracking URI of this project, or ``None`` when tracking is disabled (see module docstring)."""
    section = config.get("tracking") or {}
    if section.get("enabled", True) is False:
        return None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if section.get("uri"):
        return str(section["uri"])
    results = Path(results_dir if results_dir is not None else config.get("results", "results")).resolve()
    return f"sqlite:///{results / 'mlflow' / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: next to a sqlite db; the server's choice otherwise."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def describe_failure(exc: BaseException, uri: str) -> str:
    """One line for a tracking failure; names the fix when the server refused our Host header.

    An ``mlflow server`` answers 403 to Host headers other than localhost and
    private IPs unless started with ``--allowed-hosts`` (which then replaces
    that default): the usual mistake when jobs reach it by host name.
    """
    text = str(exc)
    line = text.splitlines()[0] if text else ""
    if "Invalid Host header" in text:
        host = urllib.parse.urlsplit(uri).netloc
        line += (f" (the server at {uri} refuses the Host header {host!r}: start it with "
                 f"--allowed-hosts listing {host})")
    return f"{exc.__class__.__name__}: {line}"


def _client(uri: str):
    configure_environment()
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, study: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    name = experiment_name(study)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            location = artifact_root(uri)
            return client.create_experiment(name, artifact_location=f"{location}/{study}" if location else None,
                                            tags=EXPERIMENT_TAGS)
        except MlflowException:  # created by a concurrent job in the meantime
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _oldest(runs) -> Any:
    return min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def quote(value: str) -> str:
    """``value`` as a string literal of MLflow's search filter."""
    return "'" + str(value).replace("'", "\\'") + "'"


def find_or_create_run(client, experiment_id: str, query: str, create) -> str:
    """The oldest run matching ``query``, else the one ``create()`` makes (it must match ``query``).

    Jobs racing to create the same run converge on the oldest; each deletes its own duplicate.
    """
    runs = client.search_runs([experiment_id], filter_string=query, max_results=50)
    if runs:
        return _oldest(runs).info.run_id
    own = create()
    runs = client.search_runs([experiment_id], filter_string=query, max_results=50)
    keep = _oldest(runs).info.run_id if runs else own
    if keep != own:
        client.delete_run(own)
    return keep


def _parent_run_id(client, experiment_id: str, study: str) -> str:
    """Find the study's parent run, or create it (RUNNING until the sync) and converge on the oldest."""
    tags = {"role": "parent", "study": study, "mlflow.note.content": parent_description(study)}
    return find_or_create_run(client, experiment_id, "tags.role = 'parent'",
                              lambda: client.create_run(experiment_id, run_name=study, tags=tags).info.run_id)


def init_store(uri: str, studies: Sequence[str] = DEFAULT_STUDIES) -> dict[str, str]:
    """Create the tracking store, one experiment and one parent run per study; return study -> experiment id.

    Run once before parallel training jobs (``brainmets tracking init``).
    Idempotent: existing experiments and parent runs are reused.
    """
    client = _client(uri)
    ids = {}
    for study in studies:
        ids[study] = _experiment_id(client, study, uri)
        for key, value in EXPERIMENT_TAGS.items():  # experiments made before the tag existed get it too
            client.set_experiment_tag(ids[study], key, value)
        _parent_run_id(client, ids[study], study)
    return ids


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (lists as their text), for MLflow params."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:_MAX_PARAM_VALUE]
    return out


class RunTracker:
    """Mirror of one training run in MLflow; every method is safe to call when tracking is off or down.

    Create with :meth:`start`. After the first failure of any call it logs one
    warning and turns itself off, so a tracking outage costs the job at most one
    bounded timeout (see the module docstring).
    """

    def __init__(self) -> None:
        self.client = None
        self.uri: str | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        #: whether :meth:`start` continued an earlier run of the same run directory
        self.reopened = False
        self._pending: list[Any] = []

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    @classmethod
    def start(cls, uri: str | None, *, study: str, model: str, subset: str, seed: int, run_dir: str | Path,
              params: Mapping[str, Any], subset_alias: str | None = None) -> "RunTracker":
        """Open the run (``subset`` canonical; ``subset_alias`` e.g. ``selected``, shown in the run's name)."""
        tracker = cls()
        if uri is None:
            return tracker
        tracker.uri = uri
        began = time.perf_counter()
        try:
            tracker._open(uri, study, model, subset, subset_alias, seed, Path(run_dir).resolve(), params)
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop training
            tracker._fail(f"could not start the MLflow run at {uri}", exc)
        logger.debug("MLflow start took %.1f s", time.perf_counter() - began)
        return tracker

    def _open(self, uri, study, model, subset, subset_alias, seed, run_dir: Path, params) -> None:
        from mlflow.entities import Param

        client = _client(uri)
        self.experiment_id = _experiment_id(client, study, uri)
        self.parent_run_id = _parent_run_id(client, self.experiment_id, study)
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "role": "child",
            "study": study,
            "model": model,
            "subset": subset,
            "seed": str(seed),
            "run_dir": str(run_dir),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        }
        if subset_alias:
            tags["subset_alias"] = subset_alias
        previous = client.search_runs([self.experiment_id], filter_string=f"tags.run_dir = {quote(run_dir)}",
                                      order_by=["attributes.start_time DESC"], max_results=1)
        if previous:  # a resumed job: continue its run rather than adding a second one
            run_id = previous[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "slurm_job_id", tags["slurm_job_id"])
            fresh = False
            self.reopened = True
        else:
            run_id = client.create_run(self.experiment_id, run_name=run_name(model, subset, seed, subset_alias),
                                       tags=tags).info.run_id
            fresh = True
        self.client, self.run_id = client, run_id
        if fresh:
            items = [Param(k, v) for k, v in flatten(params).items()]
            for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
                client.log_batch(run_id, params=items[i:i + _MAX_PARAMS_PER_BATCH])

    def _fail(self, what: str, exc: BaseException) -> None:
        logger.warning("%s: %s. MLflow tracking is off for the rest of this run; the run's own files "
                       "are still written.", what, describe_failure(exc, self.uri or ""))
        self.client, self.run_id, self._pending = None, None, []

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Queue metrics of one step (sent by :meth:`flush`, in batches); NaNs are skipped."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                             if v is not None and math.isfinite(float(v)))
        if len(self._pending) >= _MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self._pending:
            return
        try:
            for i in range(0, len(self._pending), _MAX_METRICS_PER_BATCH):
                self.client.log_batch(self.run_id, metrics=self._pending[i:i + _MAX_METRICS_PER_BATCH])
            self._pending = []
        except Exception as exc:  # noqa: BLE001
            self._fail("could not log metrics to MLflow", exc)

    def log_artifacts(self, paths: Iterable[str | Path]) -> None:
        if not self.enabled:
            return
        try:
            for path in paths:
                if Path(path).is_file():
                    self.client.log_artifact(self.run_id, str(path))
        except Exception as exc:  # noqa: BLE001
            self._fail("could not upload artifacts to MLflow", exc)

    def finish(self, status: str = "FINISHED") -> None:
        """Flush and mark the run FINISHED / FAILED / KILLED."""
        self.flush()
        if not self.enabled:
            return
        try:
            if status == "FINISHED" and self.reopened:  # an earlier job may have left it marked resumable
                self.client.set_tag(self.run_id, "resumable", "false")
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:  # noqa: BLE001
            self._fail("could not close the MLflow run", exc)

    def pause(self, iteration: int, reason: str) -> None:
        """Mark a run that stopped before its end but resumes from its checkpoint.

        MLflow has no paused state: the status is KILLED (not FAILED), with tags
        ``resumable=true``, ``stopped_at_iteration`` and ``stopped_by`` (a
        signal's name); the next job of the same run directory reopens the run.
        """
        self.flush()
        if not self.enabled:
            return
        try:
            from mlflow.entities import RunTag

            tags = {"resumable": "true", "stopped_at_iteration": str(iteration), "stopped_by": reason}
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self.client.set_terminated(self.run_id, "KILLED")
        except Exception as exc:  # noqa: BLE001
            self._fail("could not mark the MLflow run as stopped", exc)
