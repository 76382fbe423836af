"""`brainmets tracking sync`: each run's outcome and each study's summary into MLflow, once for all runs.

Training jobs mirror their curves into MLflow (brainmets.tracking); what a
run achieved only exists once it is predicted and evaluated, in files
(``metrics/<split>.tsv``, ``inference/<split>.tsv``). This module copies
those numbers into the same MLflow runs in one pass at the end of the
workflow (the ``onsuccess`` hook in workflow/rules/tracking.smk), so that the
jobs that evaluate (one per run) never write outcomes into the store (~3 s each, and
concurrent writers on one sqlite file).

* **Which run.** A trained run is found by its ``run_dir`` tag (the absolute
  run directory its training job tagged it with). Runs on disk without an
  MLflow run (trained with tracking off) are listed, not created.
* **Two-stage model.** The combined model (detector + segmentor, evaluated in
  :func:`combined_run_dir`) is not a training run: it gets a run of its own,
  ``role=combined``, under the two-stage parent, named like the others
  (``combined/selected(t1c+t2w)/seed0``) and tagged with the ids of the
  detector and segmentor runs it was built from (which in turn get its id as
  ``combined_run_id``). Its outcome is then in exactly one row of the runs
  table, not copied on two training runs that did not produce it alone.
* **Metrics** (step 0), per evaluated split: ``<split>/<metric>_<region>`` for
  legacy and lesion-wise Dice and HD95 (mean over the split's cases, NaN
  skipped), ``<split>/<metric>_avg`` (mean of WT, TC, ET as in the tables),
  ``<split>/fp_per_patient_<region>`` (mean false-positive lesions per case),
  ``<split>/seconds_per_case``, and on the selection split
  ``<split>/selection_score`` (the score :mod:`brainmets.reporting.selection`
  ranks subsets by, for this one seed).
* **Idempotent.** Each value's timestamp is its source file's modification
  time. MLflow stores a metric point once per (key, step, timestamp, value), so
  a second sync of unchanged files adds nothing; a re-evaluated file has a
  newer time, and its value becomes the run's latest (shown and sorted on)
  while the earlier one stays in the metric's history. Tags, artifacts (same
  path) and the parent's end time are overwritten.
* **Parents** get the study's summary: the selection decision as tags
  (``chosen_subset``, ``selection_*``) and as the artifact
  ``selection/modality.json``, the tables and figures as artifacts
  (``tables/``, ``figures/``: the report covers all studies together, so every
  study's parent carries them), a description, and the status FINISHED with
  the end time of the study's last child run or file.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from brainmets.constants import SELECTED
from brainmets.decision import read_selection, selected_subset, selection_path
from brainmets.errors import BrainmetsError
from brainmets.reporting.collect import TWOSTAGE_COMBINED, discover_seeds, make_group, read_inference, read_metrics
from brainmets.reporting.stats import SCORE_METRICS, per_seed_region_means
from brainmets.reporting.tables import AVERAGE_REGIONS
from brainmets.tracking import (
    DEFAULT_STUDIES,
    _client,
    _experiment_id,
    _parent_run_id,
    find_or_create_run,
    quote,
    run_name,
)

log = logging.getLogger(__name__)

#: Splits whose outcome is synced (those the workflow predicts and evaluates).
EVAL_SPLITS: tuple[str, ...] = ("val", "test")
#: The two training runs a combined two-stage model is made of.
TWOSTAGE_PARTS: tuple[str, ...] = ("detector", "segmentor")
#: Result folders whose files the parents carry as artifacts.
SUMMARY_FOLDERS: tuple[str, ...] = ("tables", "figures")

_MAX_METRICS_PER_BATCH = 1000
_MAX_RUNS = 50000  # the SQL store's largest page


def combined_run_dir(results: str | Path, subset: str, seed: int) -> Path:
    """Run directory of the combined two-stage model (predictions, metrics, inference)."""
    return Path(results) / "twostage" / TWOSTAGE_COMBINED / subset / f"seed{seed}"


@dataclass
class SyncedRun:
    """One row of the sync's summary."""

    run_dir: str  # relative to the results directory
    run_id: str | None
    name: str
    metrics: int  # metric values sent (0: nothing evaluated yet)
    note: str = ""


def _mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def run_outcome(results: Path, study: str, model: str, subset: str, seed: int,
                selection: Mapping[str, Any]) -> dict[str, tuple[float, int]]:
    """``{metric key: (value, timestamp ms)}`` of one run directory's evaluated splits (module docstring)."""
    group = make_group(results, study, model, subset, subset, [seed])
    run_dir = group.run_dir(seed)
    out: dict[str, tuple[float, int]] = {}
    for split in EVAL_SPLITS:
        metrics_file = run_dir / "metrics" / f"{split}.tsv"
        if metrics_file.is_file():
            stamp = _mtime_ms(metrics_file)
            metrics = read_metrics(group, split)
            regions = list(dict.fromkeys(metrics["region"]))
            for metric in SCORE_METRICS:
                means = per_seed_region_means(metrics, metric, regions).iloc[0]
                for region in regions:
                    out[f"{split}/{metric}_{region}"] = (float(means[region]), stamp)
                if set(AVERAGE_REGIONS) <= set(regions):
                    out[f"{split}/{metric}_avg"] = (float(means[list(AVERAGE_REGIONS)].mean()), stamp)
            if "num_fp" in metrics.columns:
                fp = metrics.groupby("region", sort=False)["num_fp"].mean()
                for region, value in fp.items():
                    out[f"{split}/fp_per_patient_{region}"] = (float(value), stamp)
            if split == selection["split"]:
                score = per_seed_region_means(metrics, selection["metric"], selection["regions"])
                out[f"{split}/selection_score"] = (float(score.mean(axis=1, skipna=True).iloc[0]), stamp)
        inference_file = run_dir / "inference" / f"{split}.tsv"
        if inference_file.is_file():
            inference = read_inference(group, split)
            out[f"{split}/seconds_per_case"] = (float(inference["seconds"].astype(float).mean()),
                                                _mtime_ms(inference_file))
    return {key: value for key, value in out.items() if _finite(value[0])}


def _run_dirs(results: Path, study: str) -> list[tuple[str, str, int]]:
    """``(model, subset dir, seed)`` of every ``<study>/<model>/<subset>/seed<k>`` directory on disk."""
    base = results / study
    found = []
    for model in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        for subset in sorted(p for p in model.iterdir() if p.is_dir()):
            found += [(model.name, subset.name, seed) for seed in discover_seeds(subset)]
    return found


def _children(client, experiment_id: str, role: str) -> dict[str, Any]:
    """run_dir tag -> run, for the experiment's runs of ``role`` (child or combined)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.role = {quote(role)}", max_results=_MAX_RUNS)
    return {run.data.tags["run_dir"]: run for run in runs if "run_dir" in run.data.tags}


def _log(client, run_id: str, outcome: Mapping[str, tuple[float, int]], tags: Mapping[str, str]) -> None:
    """Tags and outcome metrics (step 0, timestamped by their source file) of one run, in batches."""
    from mlflow.entities import Metric, RunTag

    points = [Metric(key, value, stamp, 0) for key, (value, stamp) in sorted(outcome.items())]
    for i in range(0, max(len(points), 1), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=points[i:i + _MAX_METRICS_PER_BATCH],
                         tags=[RunTag(k, v) for k, v in tags.items()] if i == 0 else [])


def _selection_tags(results: Path) -> dict[str, str]:
    path = selection_path(results)
    if not path.is_file():  # no modality study run yet: nothing to summarise
        return {}
    decision = read_selection(path)
    tags = {"chosen_subset": str(decision["chosen_subset"])}
    for key in ("metric", "split", "override", "warning"):
        if decision.get(key) is not None:
            tags[f"selection_{key}"] = str(decision[key])
    if decision.get("regions"):
        tags["selection_regions"] = ",".join(decision["regions"])
    return tags


def _summary_note(study: str, selection: Mapping[str, str], synced: list[SyncedRun], results: Path) -> str:
    evaluated = [r for r in synced if r.metrics]
    lines = [f"Study **{study}**, results in `{results}`: {len(synced)} runs, {len(evaluated)} with an outcome "
             "(metrics `val/...`, `test/...`; sort the runs table by `test/lesion_dice_avg`)."]
    if selection.get("chosen_subset"):
        how = ("fixed by override" if selection.get("selection_override")
               else f"best {selection.get('selection_metric')} on {selection.get('selection_split')}")
        lines.append(f"Modality study's choice (`selected`): **{selection['chosen_subset']}** ({how}); "
                     "decision in the artifact `selection/modality.json`.")
    lines.append("Tables and figures of the whole study: artifacts `tables/` and `figures/`.")
    return "\n\n".join(lines)


def sync_results(uri: str, results: str | Path, selection: Mapping[str, Any],
                 studies: tuple[str, ...] | list[str] = DEFAULT_STUDIES) -> dict[str, list[SyncedRun]]:
    """Log every evaluated run's outcome and each study's summary into the store at ``uri``.

    ``selection`` is the config's ``selection`` section (metric, split,
    regions). Returns, per study, one :class:`SyncedRun` per run directory.
    Safe to run again at any time: see the module docstring.
    """
    results = Path(results).resolve()
    if not results.is_dir():
        raise BrainmetsError(f"results directory not found: {results}")
    client = _client(uri)
    selection_tags = _selection_tags(results)
    report: dict[str, list[SyncedRun]] = {}
    for study in studies:
        experiment_id = _experiment_id(client, study, uri)
        parent_id = _parent_run_id(client, experiment_id, study)
        trained = _children(client, experiment_id, "child")
        combined = _children(client, experiment_id, "combined")
        synced: list[SyncedRun] = []
        ends = []
        for model, subset_dir, seed in _run_dirs(results, study):
            run_dir = results / study / model / subset_dir / f"seed{seed}"
            relative = str(run_dir.relative_to(results))
            outcome = run_outcome(results, study, model, subset_dir, seed, selection)
            alias = SELECTED if subset_dir == SELECTED else None
            if run_dir == combined_run_dir(results, subset_dir, seed):
                parts = {part: trained.get(str(results / study / part / subset_dir / f"seed{seed}"))
                         for part in TWOSTAGE_PARTS}
                synced.append(_sync_combined(client, experiment_id, parent_id, results, run_dir,
                                             combined.get(str(run_dir)), parts, outcome))
                ends += [stamp for _, stamp in outcome.values()]
                continue
            run = trained.get(str(run_dir))
            if run is None:
                note = "no MLflow run with this run_dir (trained with tracking off, or another store)"
                synced.append(SyncedRun(relative, None, relative, len(outcome), note))
                continue
            name = run_name(model, run.data.tags.get("subset", subset_dir), seed, alias)
            _log(client, run.info.run_id, outcome, {"mlflow.runName": name})
            ends.append(max([run.info.end_time or 0] + [stamp for _, stamp in outcome.values()]))
            synced.append(SyncedRun(relative, run.info.run_id, name, len(outcome)))
        _summarise_parent(client, parent_id, study, results, selection_tags, synced, ends)
        report[study] = synced
    return report


def _sync_combined(client, experiment_id: str, parent_id: str, results: Path, run_dir: Path, run,
                   parts: Mapping[str, Any], outcome: Mapping[str, tuple[float, int]]) -> SyncedRun:
    """The combined two-stage model's run (``run``, or a new one), linked with its parts, and its outcome."""
    model, subset_dir, seed_dir = run_dir.parts[-3:]
    seed = int(seed_dir[len("seed"):])
    alias = SELECTED if subset_dir == SELECTED else None
    subset = selected_subset(selection_path(results)) if alias else subset_dir
    run_id = run.info.run_id if run else _create_combined(
        client, experiment_id, parent_id, run_dir, model, subset, alias, seed, parts, outcome)
    tags = {"mlflow.runName": run_name(model, subset, seed, alias)}
    for part, part_run in parts.items():
        if part_run is not None:
            tags[f"{part}_run_id"] = part_run.info.run_id
            client.set_tag(part_run.info.run_id, "combined_run_id", run_id)
    if outcome:  # predicted and evaluated: the run ends with its last result file
        client.set_terminated(run_id, "FINISHED", end_time=max(stamp for _, stamp in outcome.values()))
    _log(client, run_id, outcome, tags)
    return SyncedRun(str(run_dir.relative_to(results)), run_id, tags["mlflow.runName"], len(outcome))


def _create_combined(client, experiment_id: str, parent_id: str, run_dir: Path, model: str, subset: str,
                     alias: str | None, seed: int, parts: Mapping[str, Any],
                     outcome: Mapping[str, tuple[float, int]]) -> str:
    """The combined two-stage model's run; it starts when the first of its parts started training.

    Parts trained with tracking off leave no start time: the run then starts with its first result file.
    """
    tags = {"mlflow.parentRunId": parent_id, "role": "combined", "study": "twostage", "model": model,
            "subset": subset, "seed": str(seed), "run_dir": str(run_dir),
            "mlflow.note.content": "Detector + segmentor predicted together (brainmets predict --detector); "
                                   "training curves are in the runs named in detector_run_id / segmentor_run_id."}
    if alias:
        tags["subset_alias"] = alias
    starts = [r.info.start_time for r in parts.values() if r is not None and r.info.start_time]
    starts = starts or [stamp for _, stamp in outcome.values()]
    return find_or_create_run(
        client, experiment_id, f"tags.run_dir = {quote(run_dir)} and tags.role = 'combined'",
        lambda: client.create_run(experiment_id, start_time=min(starts) if starts else None, tags=tags,
                                  run_name=run_name(model, subset, seed, alias)).info.run_id)


def _summarise_parent(client, parent_id: str, study: str, results: Path, selection_tags: Mapping[str, str],
                      synced: list[SyncedRun], ends: list[int]) -> None:
    from mlflow.entities import RunTag

    tags = {**selection_tags, "mlflow.note.content": _summary_note(study, selection_tags, synced, results),
            "results": str(results)}
    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
    decision = selection_path(results)
    if decision.is_file():
        client.log_artifact(parent_id, str(decision), "selection")
    for folder in SUMMARY_FOLDERS:
        files = sorted(p for p in (results / folder).glob("*") if p.is_file())
        for path in files:
            client.log_artifact(parent_id, str(path), folder)
        ends = ends + [_mtime_ms(p) for p in files]
    # a study with no run or file yet (e.g. no baselines configured) ends at this sync; a later sync moves it
    client.set_terminated(parent_id, "FINISHED", end_time=max(ends) if ends else None)


def summary_frame(report: Mapping[str, list[SyncedRun]]) -> pd.DataFrame:
    """The sync's summary as a table (study, run_dir, run_id, name, metrics, note)."""
    rows = [{"study": study, **vars(run)} for study, runs in report.items() for run in runs]
    return pd.DataFrame(rows, columns=["study", "run_dir", "run_id", "name", "metrics", "note"])
