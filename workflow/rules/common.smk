# Helpers shared by workflow/rules/*.smk (config validation, result paths,
# wildcard constraints, input and param functions); rules hold no lambdas.

import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

try:
    from brainmets.config import (
        SELECTED,
        ConfigError,
        cohort_root,
        modality_job_groups,
        study_subsets,
        trained_baselines,
        twostage_subsets,
        validate_config,
        write_resolved_config,
    )
    from brainmets.constants import CHECKPOINT_FILES, all_subsets
    from brainmets.errors import BrainmetsError
    from brainmets.reporting.collect import (
        ENSEMBLE_SOURCES,
        ENSEMBLE_VARIANTS,
        ENSEMBLES,
        TWOSTAGE_COMBINED,
        ensemble_members,
        report_config,
    )
    from brainmets.reporting.figures import figure_stems, training_figure_stems
    from brainmets.reporting.tables import TABLE_NAMES
except ImportError as exc:
    raise WorkflowError(
        f"the brainmets package is not importable ({exc}); run `bash scripts/setup.sh` "
        "and start the workflow with the project's snakemake: .venv/bin/snakemake"
    )

# Jobs call `brainmets <verb>`: make the console script of the Python running
# Snakemake win on PATH, so `.venv/bin/snakemake` works without activating .venv
# (cluster jobs re-run this file and inherit the same PATH).
envvars:
    "PATH",


os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

#: The software of every rule: envs/brainmets.yaml (relative to the rule files).
#: Normally Snakemake runs inside .venv (or the conda env built by hand from that
#: file) and jobs inherit it. With --use-conda Snakemake builds the env itself, from
#: a copy of the file under .snakemake/conda/: the file therefore names this
#: repository as ${BRAINMETS_ROOT} (pip expands it), set here for that build.
CONDA_ENV = "../../envs/brainmets.yaml"
os.environ.update(BRAINMETS_ROOT=workflow.basedir)


# --------------------------------------------------------------------------- config

# One validator for the workflow and the CLI (brainmets.config): readable
# errors naming the key and what is allowed; fills defaults; canonical subsets.
CONFIG_SOURCES = ", ".join(str(f) for f in workflow.configfiles) or "config"
if workflow.config_settings.overwrite_config:
    CONFIG_SOURCES += " + --config"
try:
    validate_config(config, source=CONFIG_SOURCES)
except ConfigError as exc:
    raise WorkflowError(str(exc))

RESULTS = os.path.normpath(config["results"])
#: The resolved config every job reads (--config); written by the onstart hook (setup.smk).
RESOLVED_CONFIG = f"{RESULTS}/config.resolved.yaml"

DATA = config["data"]
SYNTHETIC = DATA["synthetic"]["enabled"]
COHORT_ROOT = cohort_root(config)
SEEDS = config["seeds"]
RES = config["resources"]
#: Splits every model is predicted and evaluated on.
EVAL_SPLITS = ["val", "test"]
#: Job priorities (Snakemake's `priority`: among the jobs ready to start, higher first). The modality
#: study gates the subset selection, and the selected subset's two-stage chain (detector and
#: segmentor, prediction, the seed ensembles) gates the report, so both go first; the baselines, which
#: nothing but the report waits on, fill the cores in between. On 2 cores the default study took as
#: long with them as without (both cores were busy to the end either way: the selected chain now
#: shares them with the baselines instead of running alone, benchmarks/results/study_profile.md); with
#: a cluster's job limit or the paper's long trainings, the selection no longer waits on baselines.
PRIORITY_MODALITY = 20
PRIORITY_TWOSTAGE = 10

if not SYNTHETIC and not Path(COHORT_ROOT).is_dir():
    logger.warning(
        f"data.root {COHORT_ROOT} does not exist: the DAG is built, but the index job will fail; "
        "set data.root to the BraTS-MET root (one folder per case)"
    )
if config["selection"]["split"] == "test":
    logger.warning(
        "selection.split is 'test' (selection.allow_test: true): the modality subset is chosen "
        "on the TEST split; test results of the two-stage model are then not held out"
    )

# --------------------------------------------------------------------------- paths

CASES_TSV = f"{RESULTS}/data/cases.tsv"
SPLITS_TSV = f"{RESULTS}/data/splits.tsv"
CACHE_DIR = f"{RESULTS}/data/preprocessed"
#: Flag: every case of cases.tsv is in the cache (training and inference read it).
CACHE_DONE = f"{RESULTS}/data/preprocessed.done"
#: Flag: the synthetic cohort is complete (the generator itself is resumable).
SYNTH_DONE = f"{RESULTS}/data/synthetic.done"
SELECTION_JSON = f"{RESULTS}/selection/modality.json"
TABLES_DIR = f"{RESULTS}/tables"
FIGURES_DIR = f"{RESULTS}/figures"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"

#: Run directory pattern of trained / evaluated runs (docs/architecture.md).
RUN = "{study}/{model}/{subset}/seed{seed}"

MODALITY_MODEL = config["modality_study"]["model"]
MODALITY_SUBSETS = study_subsets(config)
#: modality_study.subsets_per_job > 1: the subsets of each train_modality_group<N> job, else None
MODALITY_JOB_GROUPS = modality_job_groups(config)
TWOSTAGE_SUBSETS = twostage_subsets(config)
DETECTOR = config["twostage"]["detector"]
SEGMENTOR = config["twostage"]["segmentor"]
# the modality study's model, when listed, is its run reused (Table 2's 3D-UNET row)
BASELINE_MODELS = trained_baselines(config)
BASELINE_SUBSET = config["baselines"]["subset"]
#: the weights the study predicts with (inference.checkpoint); training writes both
PREDICT_WEIGHTS = CHECKPOINT_FILES[config["inference"]["checkpoint"]]
#: The inference settings a study prediction reads (params: a change re-predicts): all but the
#: test-time mirroring, which only the seed ensembles and `brainmets segment` use.
PREDICT_INFERENCE = {k: v for k, v in config["inference"].items() if k != "mirror_axes"}
#: `brainmets train` arguments of the single-pass runs: predict val and test in the training job,
#: then evaluate them there against the cohort's ground truth (a param: a changed root reruns the job)
PREDICT_ARGS = f"--predict {' '.join(EVAL_SPLITS)} --predict-weights {PREDICT_WEIGHTS} --evaluate-gt {COHORT_ROOT}"


wildcard_constraints:
    # canonical subset keys (t1c+t1n+t2f, ...) or the alias of the modality study's choice
    subset="|".join([re.escape(s) for s in all_subsets()] + [SELECTED]),
    seed=r"\d+",
    split="|".join(EVAL_SPLITS),
    study="modality|twostage|baselines",
    model=r"[A-Za-z][A-Za-z0-9_-]*",
    case=r"[^/]+",


# --------------------------------------------------------------------------- targets


def run_dirs(study, models, subsets):
    """Run directories (relative to RESULTS) of study x models x subsets x seeds."""
    return expand(f"{study}/{{model}}/{{subset}}/seed{{seed}}", model=models, subset=subsets, seed=SEEDS)


def evaluated_runs():
    """Every run directory that is predicted and evaluated, in report order."""
    return (
        run_dirs("modality", [MODALITY_MODEL], MODALITY_SUBSETS)
        + run_dirs("twostage", [TWOSTAGE_COMBINED], TWOSTAGE_SUBSETS)
        + run_dirs("baselines", BASELINE_MODELS, [BASELINE_SUBSET])
    )


def trained_runs():
    """Every run directory holding a trained model.pt."""
    return (
        run_dirs("modality", [MODALITY_MODEL], MODALITY_SUBSETS)
        + run_dirs("twostage", ["detector", "segmentor"], TWOSTAGE_SUBSETS)
        + run_dirs("baselines", BASELINE_MODELS, [BASELINE_SUBSET])
    )


def get_modality_metrics(wildcards=None):
    """Metrics of the modality study on the selection split (input of the selection)."""
    split = config["selection"]["split"]
    return [
        f"{RESULTS}/{run}/metrics/{split}.tsv"
        for run in run_dirs("modality", [MODALITY_MODEL], MODALITY_SUBSETS)
    ]


def get_report_inputs(wildcards=None):
    """Every file the tables and figures read: metrics, inference logs, models, data tables."""
    files = [CASES_TSV, SPLITS_TSV, SELECTION_JSON]
    for run in evaluated_runs():
        for split in EVAL_SPLITS:
            files += [
                f"{RESULTS}/{run}/metrics/{split}.tsv",
                f"{RESULTS}/{run}/metrics/{split}_lesions.tsv",
                f"{RESULTS}/{run}/inference/{split}.tsv",
            ]
    # model.pt stands for the run's history.tsv and model_info.json (written with it)
    files += [f"{RESULTS}/{run}/model.pt" for run in trained_runs()]
    return files


# --------------------------------------------------------------------------- seeds per job

#: seeds_per_job: all = one training (or two-stage prediction) job runs every seed of its
#: <study>/<model>/<subset> in turn, in one process; 1 = one job per seed, the {seed} wildcard.
SEED_GROUPS = config["seeds_per_job"] == "all"
#: The run directories of one job below <study>/<model>/<subset>/ (docs/architecture.md).
JOB_RUNS = [f"seed{seed}" for seed in SEEDS] if SEED_GROUPS else ["seed{seed}"]
#: Where the job's own log and benchmark go below <study>/<model>/<subset>/: one file per job.
JOB_FILES = "seeds" if SEED_GROUPS else "seed{seed}"


def job_paths(group, *names):
    """``names`` in each run directory of one job: group is ``<study>/<model>/<subset>`` (wildcards
    left in), the paths are below RESULTS, seed by seed."""
    return [f"{RESULTS}/{group}/{run}/{name}" for run in JOB_RUNS for name in names]


def job_log(group, name):
    """The log of one job of ``group`` (``name``: train.log, predict.log)."""
    return f"{LOGS}/{group}/{JOB_FILES}/{name}"


def job_benchmark(group, name):
    """The benchmark of one job of ``group``, mirroring its log path."""
    return f"{BENCHMARKS}/{group}/{JOB_FILES}/{name}"


def prediction_outputs(group):
    """What predicting and evaluating val and test writes in each run directory of a job."""
    return {
        "predictions": [directory(path) for path in job_paths(group, "predictions")],
        "inference": job_paths(group, *[f"inference/{split}.tsv" for split in EVAL_SPLITS]),
        "metrics": job_paths(group, *[f"metrics/{split}.tsv" for split in EVAL_SPLITS]),
        "lesions": job_paths(group, *[f"metrics/{split}_lesions.tsv" for split in EVAL_SPLITS]),
    }


def train_outputs(group, predicted=True):
    """Outputs of a training job: model.pt and best.pt of each run and, when the job predicts, its predictions."""
    outputs = {"model": job_paths(group, "model.pt"), "best": job_paths(group, "best.pt")}
    if predicted:
        outputs.update(prediction_outputs(group))
    return outputs


def group_train_outputs(subsets):
    """Outputs of a train_modality_group<N> job: train_outputs of each subset (all seeds), subset by subset."""
    outputs = {}
    for subset in subsets:
        for key, paths in train_outputs(f"modality/{MODALITY_MODEL}/{subset}").items():
            outputs.setdefault(key, []).extend(paths)
    return outputs


def job_seeds(wildcards):
    """The seeds of one job (`--seed`): its {seed} wildcard, or every seed of the config."""
    return " ".join(str(seed) for seed in SEEDS) if SEED_GROUPS else wildcards.seed


def _run_dirs_of(paths):
    """The run directories (space-separated) of one file or folder per run."""
    return " ".join(str(Path(path).parent) for path in paths)


def train_out_dirs(wildcards, output):
    """`--out-dir` of a training job: the folder of each run's model.pt, in the order of `--seed`."""
    return _run_dirs_of(output.model)


def predict_out_dirs(wildcards, output):
    """`--out-dir` of a prediction job: the folder of each run's predictions/, in the order of `--model`."""
    return _run_dirs_of(output.predictions)


# --------------------------------------------------------------------------- training inputs


def get_train_inputs(wildcards):
    """Inputs of every training job: the cache, the split and, for `selected`, the decision."""
    inputs = {"cache": CACHE_DONE, "splits": SPLITS_TSV}
    if wildcards.subset == SELECTED:
        inputs["selection"] = SELECTION_JSON
    return inputs


def get_segmentor_inputs(wildcards):
    """Segmentor inputs: as any training, plus the detector when training on detected crops."""
    inputs = get_train_inputs(wildcards)
    if config["twostage"]["train_on_detected"]:
        # the detector's best weights, as the authors' code does (= its final ones when it did not validate)
        inputs["detector"] = [path.format(**dict(wildcards.items()))
                              for path in job_paths("twostage/detector/{subset}", "best.pt")]
    return inputs


def selection_arg(wildcards):
    """`--selection <json>` for the alias subset `selected`, else nothing."""
    return f"--selection {SELECTION_JSON}" if wildcards.subset == SELECTED else ""


def detector_arg(wildcards, input):
    """`--detector <model.pt>...` (one per seed) for jobs with a detector input (the two-stage segmentor
    trained on detected crops)."""
    return f"--detector {' '.join(input.detector)}" if "detector" in input.keys() else ""


def model_wildcard(wildcards):
    """The model key of a single-pass run: its {model} wildcard."""
    return wildcards.model


def model_settings(wildcards):
    """The config a training job depends on (params: a change here retrains, nothing else does)."""
    return settings_of_model(wildcards.model)


def settings_of_model(model):
    """:func:`model_settings` of the registry entry ``model`` (jobs without a {model} wildcard)."""
    return {"model": config["models"][model], "training": config["training"], "validation": validation_settings()}


def validation_settings():
    """The inference keys validation during training reads, when it validates (never `checkpoint`:
    that choice retrains nothing)."""
    if not config["training"]["val_every"]:
        return None
    return {k: config["inference"][k] for k in ("overlap", "blend", "threshold", "detector_threshold")}


def twostage_settings(wildcards):
    """Config of a two-stage training job (detector or segmentor)."""
    return {
        "detector": config["models"][DETECTOR],
        "segmentor": config["models"][SEGMENTOR],
        "training": config["training"],
        "train_on_detected": config["twostage"]["train_on_detected"],
        "validation": validation_settings(),
    }


def resolved_config(wildcards):
    """The config file a job reads (a param, not an input: see setup.smk)."""
    return RESOLVED_CONFIG


def init_tracking():
    """`brainmets tracking init` before the first job; a failure only warns (files are the truth)."""
    import subprocess

    log = Path(LOGS) / "tracking_init.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        status = subprocess.run(
            ["brainmets", "tracking", "init", "--config", RESOLVED_CONFIG],
            stdout=out, stderr=subprocess.STDOUT,
        ).returncode
    if status != 0:
        logger.warning(
            f"MLflow tracking could not be initialised (see {log}); training jobs will try again "
            "and warn, results are written to files either way"
        )


def out_dir(wildcards, output):
    """Output directory of a job: the folder of its first output (model.pt, predictions/, a table)."""
    return str(Path(output[0]).parent)


def results_dir(wildcards, output):
    """The results root, two levels above the job's first output (tables/x.csv, selection/x.json)."""
    return str(Path(output[0]).parent.parent)


def flagged_dir(wildcards, output):
    """The directory a job fills, named by its flag output (<dir>.done)."""
    return str(Path(output[0]).with_suffix(""))


def cache_dir(wildcards, input):
    """The preprocessed cache directory, named by its completeness flag (<dir>.done)."""
    return str(Path(input.cache).with_suffix(""))


# --------------------------------------------------------------------------- final targets


def get_final_outputs():
    return [SELECTION_JSON] + get_table_files() + get_figure_files()


# --------------------------------------------------------------------------- report files

#: Names of the tables and figures, as the reporting package writes them (each
#: table as .csv and .tex, each figure as .png and .pdf).
TABLES = list(TABLE_NAMES)
REPORT_CONFIG = report_config(config)
FIGURES = figure_stems(REPORT_CONFIG)
TRAINING_FIGURES = training_figure_stems(REPORT_CONFIG)


def table_report_files():
    """The tables' HTML renderings (marks included), registered for the report with their captions."""
    return [
        as_report(f"{TABLES_DIR}/{name}.html", f"../report/{name}.rst", "Tables", {"table": name})
        for name in TABLES
    ]


def figure_report_files():
    """The PNG figures for the HTML report, each with its caption (workflow/report/<name>.rst)."""
    return [
        as_report(f"{FIGURES_DIR}/{name}.png", f"../report/{name}.rst",
                  "Training curves" if name in TRAINING_FIGURES else "Figures", {"figure": name})
        for name in FIGURES
    ]


def as_report(files, caption, category, labels=None):
    """Snakemake's report() flag (the name `report` cannot start a line outside a rule)."""
    return report(files, caption=caption, category=category, labels=labels)


def get_table_files():
    return expand(f"{TABLES_DIR}/{{name}}.{{ext}}", name=TABLES, ext=["csv", "tex", "html"])


def get_figure_files():
    return expand(f"{FIGURES_DIR}/{{name}}.{{ext}}", name=FIGURES, ext=["png", "pdf"])


# --------------------------------------------------------------------------- data inputs


def synth_shape_arg():
    shape = DATA["synthetic"]["shape"]
    return "" if shape is None else "--shape " + " ".join(str(n) for n in shape)


def synth_spacing_arg():
    spacing = DATA["synthetic"]["spacing"]
    return "" if spacing is None else f"--spacing {spacing}"


def cache_spacing_arg():
    spacing = DATA["spacing"]
    return "" if spacing is None else "--spacing " + " ".join(str(s) for s in spacing)


def get_index_inputs(wildcards):
    """The synthetic cohort's flag; nothing for a real root (it may not exist during a dry run)."""
    return [SYNTH_DONE] if SYNTHETIC else []


def split_file_path(path):
    """A relative split file is read from the working directory, or else from this repository.

    So the split that ships with the repository (configs/paper_split.tsv) is found
    whichever directory the workflow runs in, and a user's own file still wins.
    """
    if Path(path).is_absolute() or Path(path).exists():
        return path
    shipped = Path(workflow.basedir) / path
    return str(shipped) if shipped.exists() else path


def get_split_inputs(wildcards):
    inputs = {"cases": CASES_TSV}
    if DATA["split"]["file"] is not None:
        inputs["split_file"] = split_file_path(DATA["split"]["file"])
    return inputs


def split_file_arg(wildcards, input):
    if "split_file" not in input.keys():
        return ""
    return f"--split-file {input.split_file} --on-bad-case {DATA['on_bad_case']}"


def get_cached_cases(wildcards):
    """Cache files of every ok case; asks the index checkpoint (the case set is data-dependent)."""
    import pandas as pd

    cases_tsv = checkpoints.index.get().output[0]
    table = pd.read_csv(cases_tsv, sep="\t", usecols=["case", "status"])
    cases = table.loc[table["status"] == "ok", "case"].tolist()
    return expand(f"{CACHE_DIR}/{{case}}.{{ext}}", case=cases, ext=["npy", "json"])


def selection_extra_args():
    """`--override KEY` and `--allow-test` of the subset selection, as configured."""
    sel = config["selection"]
    args = []
    if sel["override"] is not None:
        args.append(f"--override {sel['override']}")
    if sel["allow_test"]:
        args.append("--allow-test")
    return " ".join(args)


# --------------------------------------------------------------------------- ensembles (ensembles.smk)

try:
    #: (source, subset) of each seed ensemble: the two-stage model and/or the modality study's network.
    ENSEMBLE_MEMBERS = ensemble_members(config)
except BrainmetsError as exc:
    raise WorkflowError(str(exc))
ENSEMBLES_DIR = f"{RESULTS}/{ENSEMBLES}"
EXTERNAL = config["external"]


def ensemble_runs(source, subset):
    """``{"models": [...], "detectors": [...]}``: the weights inference.checkpoint names (as for predict)
    of every seed of one ensemble's runs; `brainmets ensemble` / `segment` read the same file through --config."""
    if source == "twostage":
        return {
            "models": expand(f"{RESULTS}/twostage/segmentor/{subset}/seed{{seed}}/{PREDICT_WEIGHTS}", seed=SEEDS),
            "detectors": expand(f"{RESULTS}/twostage/detector/{subset}/seed{{seed}}/{PREDICT_WEIGHTS}", seed=SEEDS),
        }
    return {"models": expand(f"{RESULTS}/modality/{MODALITY_MODEL}/{subset}/seed{{seed}}/{PREDICT_WEIGHTS}",
                             seed=SEEDS)}


def get_ensemble_inputs(wildcards):
    """A seed ensemble's trained runs, the split table, the cohort (raw cases and ground truth) and the cache
    (the run cards')."""
    inputs = {**ensemble_runs(wildcards.source, wildcards.subset), "splits": SPLITS_TSV, "cache": CACHE_DONE}
    if SYNTHETIC:
        inputs["cohort"] = SYNTH_DONE
    return inputs


def ensemble_model_args(wildcards, input):
    """`--model RUN...` (and `--detector RUN...`) of `brainmets ensemble` / `segment`: the weights' run directories."""
    args = "--model " + " ".join(str(Path(p).parent) for p in input.models)
    if "detectors" in input.keys():
        args += " --detector " + " ".join(str(Path(p).parent) for p in input.detectors)
    return args


def ensemble_outputs(base):
    """Outputs of one seed ensemble's job under ``base`` (ensembles/<source>/<subset>): each variant's
    predictions and metrics, and the postprocessing decision."""
    outputs = {variant: directory(f"{base}/{variant}/predictions") for variant in ENSEMBLE_VARIANTS}
    outputs["decision"] = f"{base}/postprocessing.json"
    for variant in ENSEMBLE_VARIANTS:
        for split in EVAL_SPLITS:
            outputs[f"{variant}_{split}"] = f"{base}/{variant}/metrics/{split}.tsv"
            outputs[f"{variant}_{split}_lesions"] = f"{base}/{variant}/metrics/{split}_lesions.tsv"
    return outputs


def ensemble_metrics():
    """Metrics of every ensemble row (Table 2) when ensembles are enabled."""
    return [
        f"{ENSEMBLES_DIR}/{source}/{subset}/{variant}/metrics/{split}.tsv"
        for source, subset in ENSEMBLE_MEMBERS
        for variant in ENSEMBLE_VARIANTS
        for split in EVAL_SPLITS
    ]


def get_external_inputs(wildcards):
    """The configured ensemble (`ensembles.external_model`) and its postprocessing decision, for an external folder."""
    if EXTERNAL is None:
        raise WorkflowError("segment_external needs the folder to segment: --config external=DIR")
    if not Path(EXTERNAL).is_dir():
        raise WorkflowError(f"external folder not found: {EXTERNAL} (--config external=DIR)")
    source = config["ensembles"]["external_model"]
    subset = dict(ensemble_members(config, only_enabled=False)).get(source)
    if subset is None:
        raise WorkflowError(
            f"ensembles.external_model is {source!r} but ensembles.members.{source} is null: "
            "no ensemble to segment with"
        )
    return {**ensemble_runs(source, subset), "decision": f"{ENSEMBLES_DIR}/{source}/{subset}/postprocessing.json"}


def external_name():
    """Output folder name under results/external/: the external folder's name."""
    return Path(EXTERNAL).resolve().name if EXTERNAL else "unset"


def attempt_number(wildcards, attempt):
    """Snakemake's attempt (1 = first job) for `brainmets train --attempt`: a retry of a run that
    failed for a real error (its failed.txt) fails again at once instead of training again."""
    return attempt
