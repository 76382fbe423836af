"""Where a finished study's time goes: per kind of job, wall, CPU and the share that is not compute.

Reads what a Snakemake run of the study leaves behind, without running anything:

* ``<results>/benchmarks/**/*.tsv``: Snakemake's per-job benchmark (``s`` wall,
  ``cpu_time`` user+system of the job's process tree, ``max_rss``);
* the Snakemake log (optional, ``--log``): which rule each benchmark belongs to,
  and the first and last timestamp of the run;
* ``/usr/bin/time -v`` output of the whole command (optional, ``--time``): the
  study's wall time and its CPU time, Snakemake's own process included;
* the runs' own clocks, for the compute inside a job: ``history.tsv`` (column
  ``seconds``: time in training steps) and ``inference/<split>.tsv`` (column
  ``seconds``: per-case prediction time). A job's run directories mirror its
  benchmark path: ``<group>/seed<k>/train.tsv`` for one seed per job,
  ``<group>/seeds/train.tsv`` for a job that ran every ``<group>/seed<k>``
  (``seeds_per_job: all``).

Per kind of job it reports jobs, the runs they trained or predicted, summed wall and CPU seconds, CPU/wall (below
1 for a one-thread job: it waited, for the CPU on a busy machine or for the
disk), the compute
seconds the runs measured and the rest, ``overhead = wall - compute``: start-up
(interpreter, imports of torch / MONAI / MLflow, model building), reading the
cache, MLflow, writing files and, since the jobs that predict also evaluate
(``--evaluate-gt``), the evaluation of their predictions (shown as "-" for jobs
that keep no clock of their own: data, reporting, the seed ensembles'
``ensemble`` jobs, and the ``evaluate`` jobs of a study run before that
change, which a ``--compare`` may still list). ``snakemake + other`` is
the command's CPU time minus the jobs' CPU time: Snakemake's scheduler and
DAG updates, the tracking hooks, and the CPU Snakemake's benchmark misses
(it samples each job once a second, every 30 s after the first 30 s).

    python benchmarks/bench_study.py RESULTS [--log study.log] [--time study.time]
        [--compare OTHER_RESULTS --compare-log ... --compare-time ...] [--out profile.md]

With ``--compare`` both studies are tabulated side by side (before = RESULTS,
after = OTHER_RESULTS) with the ratio of their totals, and their numbers are
compared file by file: every run's ``metrics/*.tsv``, the subset decision and
the tables (a table with timings, such as the efficiency table, differs by its
seconds alone). Where the numbers are meant to move a little (another
precision), it also tabulates how far every run group's mean Dice moved per
split, against the spread between the seeds of the first study.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

#: Snakemake's log: the timestamp line before each job block and each "Finished" line.
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_BENCH = re.compile(r"^\s+benchmark: (\S+)$")
_STAMP_FORMAT = "%a %b %d %H:%M:%S %Y"


@dataclass
class Kind:
    """The jobs of one rule, summed."""

    jobs: int = 0
    runs: int = 0  # run directories of those jobs (a seed-group job has several; data and report jobs none)
    wall: float = 0.0
    cpu: float = 0.0
    compute: float = 0.0  # seconds the runs measured themselves (training steps, per-case prediction)
    clocked: bool = False  # whether any job of this kind keeps such a clock
    max_rss: float = 0.0


@dataclass
class Study:
    """One finished study: its jobs by kind and, when known, the whole command's wall and CPU time."""

    results: Path
    kinds: dict[str, Kind] = field(default_factory=lambda: defaultdict(Kind))
    wall: float | None = None  # the whole command
    cpu: float | None = None
    log_span: float | None = None  # first to last timestamp of the Snakemake log

    @property
    def job_wall(self) -> float:
        return sum(k.wall for k in self.kinds.values())

    @property
    def job_cpu(self) -> float:
        return sum(k.cpu for k in self.kinds.values())


def read_benchmark(path: Path) -> dict[str, float]:
    """The one data row of a Snakemake benchmark TSV (``NA`` fields as 0)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if len(rows) != 1:
        raise SystemExit(f"{path}: expected one benchmark row (a study run once), found {len(rows)}")
    return {k: (0.0 if v in ("NA", "", None) else float(v)) for k, v in rows[0].items() if k != "h:m:s"}


def rules_by_benchmark(log: Path) -> tuple[dict[str, str], float | None]:
    """benchmark path (below benchmarks/) -> rule name from a Snakemake log, and the span of its timestamps in seconds."""
    rules: dict[str, str] = {}
    stamps: list[dt.datetime] = []
    rule = None
    for line in log.read_text(errors="replace").splitlines():
        if m := _STAMP.match(line):
            stamps.append(dt.datetime.strptime(m.group(1), _STAMP_FORMAT))
        elif m := _RULE.match(line):
            rule = m.group(1)
        elif (m := _BENCH.match(line)) and rule:
            # keyed by the path below benchmarks/, whatever the results directory is called
            rules[m.group(1).rpartition("benchmarks/")[2]] = rule
    span = (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None
    return rules, span


def read_time_v(path: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds from ``/usr/bin/time -v`` output."""
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.strip().rpartition(": ")
        values[key] = value
    try:
        user = float(values["User time (seconds)"])
        system = float(values["System time (seconds)"])
        clock = values["Elapsed (wall clock) time (h:mm:ss or m:ss)"]
    except KeyError as exc:
        raise SystemExit(f"{path}: not /usr/bin/time -v output (no {exc})") from exc
    seconds = 0.0
    for part in clock.split(":"):
        seconds = 60 * seconds + float(part)
    return seconds, user + system


def _column_sum(path: Path, column: str) -> float:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return sum(float(r[column]) for r in rows if r.get(column) not in (None, "", "NA"))


def _last_value(path: Path, column: str) -> float:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return float(rows[-1][column]) if rows else 0.0


#: The benchmark folder of a job that ran every seed of its group (seeds_per_job: all).
SEED_GROUP = "seeds"


#: The benchmark folders of the modality study's subset-group jobs (modality_study.subsets_per_job > 1).
SUBSET_GROUP = re.compile(r"^group(\d+)$")


def _seed_runs(folder: Path) -> list[Path]:
    return sorted(run for run in folder.glob("seed*") if run.name[4:].isdigit())


def job_runs(results: Path, bench: Path, benchmarks: Path) -> list[Path]:
    """The run directories of a training or prediction job: the one its benchmark path mirrors, or,
    for a seed-group job (``<group>/seeds/``), every ``<group>/seed<k>``, or, for a subset-group job
    (``modality/<model>/groups/group<N>/``), every seed of its subsets (the study's resolved config
    says which); none for other jobs."""
    if bench.stem not in ("train", "predict"):
        return []
    folder = results / bench.parent.relative_to(benchmarks)
    if folder.name == SEED_GROUP:
        return _seed_runs(folder.parent)
    group = SUBSET_GROUP.match(folder.name)
    if group and folder.parent.name == "groups":
        from brainmets.config import load_config, modality_job_groups

        subsets = (modality_job_groups(load_config(results / "config.resolved.yaml")) or [])[int(group[1]) - 1]
        return [run for subset in subsets for run in _seed_runs(folder.parent.parent / subset)]
    return [folder]


def job_compute(runs: list[Path], bench: Path) -> float | None:
    """Seconds the job's runs measured themselves, or None for a job without such a clock.

    A training run's steps are in history.tsv. Prediction time is in
    inference/<split>.tsv, counted for the job that predicted: the predict job,
    or the training job when there is none.
    """
    if bench.stem not in ("train", "predict"):
        return None
    seconds = 0.0
    for run in runs:
        inference = sorted((run / "inference").glob("*.tsv")) if (run / "inference").is_dir() else []
        if bench.stem == "train":
            seconds += _last_value(run / "history.tsv", "seconds") if (run / "history.tsv").is_file() else 0.0
            if (bench.parent / "predict.tsv").is_file():
                continue
        seconds += sum(_column_sum(t, "seconds") for t in inference)
    return seconds


def kind_of(bench: Path, benchmarks: Path, rules: dict[str, str]) -> str:
    """The rule that wrote this benchmark (from the log), else its file name without the split."""
    rule = rules.get(bench.relative_to(benchmarks).as_posix())
    if rule:
        return re.sub(r"_group\d+$", "_group", rule)  # train_modality_group1, 2, ...: one kind
    return re.sub(r"_(val|test)$", "", bench.stem)


def load_study(results: Path, log: Path | None, time_v: Path | None) -> Study:
    benchmarks = results / "benchmarks"
    if not benchmarks.is_dir():
        raise SystemExit(f"{results}: no benchmarks/ folder (is this a study's results directory?)")
    study = Study(results)
    rules, study.log_span = rules_by_benchmark(log) if log else ({}, None)
    if time_v:
        study.wall, study.cpu = read_time_v(time_v)
    for bench in sorted(benchmarks.rglob("*.tsv")):
        row = read_benchmark(bench)
        kind = study.kinds[kind_of(bench, benchmarks, rules)]
        kind.jobs += 1
        runs = job_runs(results, bench, benchmarks)
        kind.runs += len(runs)
        kind.wall += row.get("s", 0.0)
        kind.cpu += row.get("cpu_time", 0.0)
        kind.max_rss = max(kind.max_rss, row.get("max_rss", 0.0))
        compute = job_compute(runs, bench)
        if compute is not None:
            kind.compute += compute
            kind.clocked = True
    return study


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "-"


def profile_table(study: Study) -> list[str]:
    """Markdown: one row per kind of job, then the whole command."""
    lines = [
        "| kind of job | jobs | runs | wall s | CPU s | CPU share | wall/job s | CPU/wall | compute s | overhead s "
        "| overhead share | max RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total_cpu = study.cpu if study.cpu is not None else study.job_cpu
    for name, k in sorted(study.kinds.items(), key=lambda item: -item[1].cpu):
        overhead = k.wall - k.compute
        lines.append(
            f"| {name} | {k.jobs} | {k.runs or '-'} | {k.wall:.0f} | {k.cpu:.0f} | {_pct(k.cpu, total_cpu)} | {k.wall / k.jobs:.1f} | "
            f"{k.cpu / k.wall if k.wall else 0:.2f} | "
            + (f"{k.compute:.0f} | {overhead:.0f} | {_pct(overhead, k.wall)} | " if k.clocked else "- | - | - | ")
            + f"{k.max_rss:.0f} |"
        )
    lines.append(f"| all jobs | {sum(k.jobs for k in study.kinds.values())} | "
                 f"{sum(k.runs for k in study.kinds.values())} | {study.job_wall:.0f} | "
                 f"{study.job_cpu:.0f} | {_pct(study.job_cpu, total_cpu)} | | | | | | |")
    if study.cpu is not None:
        rest = study.cpu - study.job_cpu
        lines.append(f"| snakemake + other | 1 | | | {rest:.0f} | {_pct(rest, study.cpu)} | | | | | | |")
    return lines


def summary(study: Study) -> list[str]:
    lines = []
    if study.wall is not None:
        lines.append(f"- whole command: {study.wall:.0f} s wall ({study.wall / 60:.1f} min), "
                     f"{study.cpu:.0f} s CPU ({study.cpu / 60:.1f} CPU-min)")
    if study.log_span is not None:
        lines.append(f"- Snakemake log, first to last timestamp: {study.log_span:.0f} s")
    clocked = [k for k in study.kinds.values() if k.clocked]
    if clocked:
        wall = sum(k.wall for k in clocked)
        compute = sum(k.compute for k in clocked)
        lines.append(f"- training and prediction jobs: {wall:.0f} s of job wall time, of which {compute:.0f} s "
                     f"({_pct(compute, wall)}) in training steps and per-case prediction; the rest "
                     f"({wall - compute:.0f} s) is start-up, model building, MLflow and file writing")
    return lines


def comparison(before: Study, after: Study) -> list[str]:
    """Markdown: per kind of job, jobs / wall / CPU before and after; then the totals and their ratio."""
    lines = ["| kind of job | jobs before | jobs after | runs before | runs after | wall s before | wall s after "
             "| CPU s before | CPU s after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(set(before.kinds) | set(after.kinds), key=lambda n: -before.kinds.get(n, Kind()).cpu):
        b, a = before.kinds.get(name, Kind()), after.kinds.get(name, Kind())
        lines.append(f"| {name} | {b.jobs} | {a.jobs} | {b.runs} | {a.runs} | {b.wall:.0f} | {a.wall:.0f} | {b.cpu:.0f} | {a.cpu:.0f} |")
    lines.append(f"| all jobs | {sum(k.jobs for k in before.kinds.values())} | "
                 f"{sum(k.jobs for k in after.kinds.values())} | {sum(k.runs for k in before.kinds.values())} | "
                 f"{sum(k.runs for k in after.kinds.values())} | {before.job_wall:.0f} | {after.job_wall:.0f} | "
                 f"{before.job_cpu:.0f} | {after.job_cpu:.0f} |")
    lines.append("")
    if before.wall and after.wall:
        lines.append(f"Whole command: {before.wall:.0f} s -> {after.wall:.0f} s wall "
                     f"(after/before {after.wall / before.wall:.2f}); {before.cpu:.0f} s -> {after.cpu:.0f} s CPU "
                     f"(after/before {after.cpu / before.cpu:.2f}).")
    else:
        lines.append(f"Sum of job CPU: after/before {after.job_cpu / before.job_cpu:.2f} (no --time for the "
                     "whole commands).")
    return lines


#: The study's numbers, relative to a results directory: what must not move when only speed changes.
NUMBERS = ("**/metrics/*.tsv", "selection/*.json", "tables/*.csv")


def same_numbers(before: Path, after: Path) -> list[str]:
    """Markdown lines: which result files are byte-identical between two studies, and which differ."""
    lines = []
    for pattern in NUMBERS:
        names = sorted({p.relative_to(before).as_posix() for p in before.glob(pattern)}
                       | {p.relative_to(after).as_posix() for p in after.glob(pattern)})
        differ = [n for n in names if not ((before / n).is_file() and (after / n).is_file()
                                           and (before / n).read_bytes() == (after / n).read_bytes())]
        lines.append(f"- `{pattern}`: {len(names) - len(differ)} of {len(names)} files identical"
                     + (f"; differ or missing on one side: {', '.join(differ[:8])}"
                        + (f" (+{len(differ) - 8} more)" if len(differ) > 8 else "") if differ else ""))
    return lines


#: A single run's metric file: ``<group>/seed<k>/metrics/<split>.tsv`` (ensembles and lesion tables aside).
_RUN_METRICS = re.compile(r"^(?P<group>.+)/seed\d+/metrics/(?P<split>[a-z]+)\.tsv$")


def run_dice(results: Path) -> dict[tuple[str, str, str], dict[str, list[float]]]:
    """Per (split, run group, region): each seed's mean legacy and lesion-wise Dice over the cases."""
    out: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for path in sorted(results.glob("**/seed*/metrics/*.tsv")):
        match = _RUN_METRICS.match(path.relative_to(results).as_posix())
        if not match:
            continue
        by_region: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                for column in ("legacy_dice", "lesion_dice"):
                    value = float(row.get(column) or "nan")
                    if value == value:  # empty and NaN cells (no lesion to score) are left out
                        by_region[row["region"]][column].append(value)
        for region, columns in by_region.items():
            key = (match["split"], match["group"], region)
            entry = out.setdefault(key, {"legacy_dice": [], "lesion_dice": []})
            for column, values in columns.items():
                entry[column].append(100 * sum(values) / len(values))
    return out


def moved_numbers(before: Path, after: Path) -> list[str]:
    """Markdown table: how far the runs' Dice moved (after - before), next to the seed-to-seed spread.

    For studies whose numbers are meant to move a little (another precision, say): per split, over every
    run group and region both studies have (mean over seeds of the per-case mean Dice, x100), the mean
    shift, the mean absolute shift, and the median range over seeds within ``before``.
    """
    old, new = run_dice(before), run_dice(after)
    lines = ["| split | groups | mean shift, legacy / lesion-wise | mean abs shift | median seed range (before) |",
             "|---|---:|---:|---:|---:|"]
    for split in sorted({key[0] for key in old}):
        keys = [key for key in old if key[0] == split and key in new]
        if not keys:
            continue
        shifts: dict[str, list[float]] = defaultdict(list)
        ranges: dict[str, list[float]] = defaultdict(list)
        for key in keys:
            for column in ("legacy_dice", "lesion_dice"):
                a, b = old[key][column], new[key][column]
                if a and b:
                    shifts[column].append(sum(b) / len(b) - sum(a) / len(a))
                    ranges[column].append(max(a) - min(a))

        def cell(values: dict[str, list[float]], reduce) -> str:
            return " / ".join(reduce(values[c]) if values[c] else "-" for c in ("legacy_dice", "lesion_dice"))

        mean = cell(shifts, lambda v: f"{sum(v) / len(v):+.1f}")
        mean_abs = cell(shifts, lambda v: f"{sum(map(abs, v)) / len(v):.1f}")
        median_range = cell(ranges, lambda v: f"{sorted(v)[len(v) // 2]:.1f}")
        lines.append(f"| {split} | {len(keys)} | {mean} | {mean_abs} | {median_range} |")
    return lines


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results directory of a finished study")
    parser.add_argument("--log", type=Path, help="its Snakemake log (rule of each job, timestamps)")
    parser.add_argument("--time", type=Path, help="its /usr/bin/time -v output (the whole command)")
    parser.add_argument("--compare", type=Path, metavar="RESULTS", help="a second study's results (after)")
    parser.add_argument("--compare-log", type=Path)
    parser.add_argument("--compare-time", type=Path)
    parser.add_argument("--out", type=Path, help="write the Markdown here as well as to stdout")
    args = parser.parse_args(argv)

    before = load_study(args.results, args.log, args.time)
    lines = [f"Machine (where this script ran): {machine()}", "", f"## {args.results}", ""]
    lines += summary(before) + [""] + profile_table(before) + [""]
    if args.compare:
        after = load_study(args.compare, args.compare_log, args.compare_time)
        lines += [f"## {args.compare}", ""] + summary(after) + [""] + profile_table(after) + [""]
        lines += [f"## {args.results} (before) against {args.compare} (after)", ""] + comparison(before, after)
        lines += ["", "Same numbers:", ""] + same_numbers(args.results, args.compare)
        lines += ["", "How far the runs' Dice moved:", ""] + moved_numbers(args.results, args.compare)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
