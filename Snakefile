# brainmets: the whole study as one Snakemake workflow.
#
#   .venv/bin/snakemake --cores all                                  # embedded synthetic default
#   .venv/bin/snakemake --cores all --configfile configs/paper.yaml  # BraTS-Mets 2023, paper setup
#   .venv/bin/snakemake --report results/report.html                 # HTML report (same --configfile as the run)
#   .venv/bin/snakemake --workflow-profile workflow/profiles/slurm   # SLURM (edit partition/account)
#
# Stages (one rule file each, workflow/rules/):
#   data.smk            synthesise (default) -> index -> split -> preprocess cache
#   setup.smk           before the first job: write the resolved config, create the MLflow store
#   modality_study.smk  3D U-Net x 15 modality subsets x seeds; subset selection
#   two_stage.smk       detector + segmentor with the selected subset and all four sequences
#   baselines.smk       single-pass comparison models, all four sequences
#   evaluation.smk      prediction and evaluation of the two-stage model (val + test in one job; the
#                       single-pass runs are predicted and evaluated on val + test by their training job)
#   ensembles.smk       seed ensembles (+ mirroring, + tuned postprocessing) as Table 2 rows; segment_external
#   report.smk          tables (CSV + LaTeX) and figures (PNG + PDF), in the report
#   tracking.smk        after a successful run: every run's outcome and the study summaries into MLflow
#
# Every rule calls one `brainmets <verb>` (docs/architecture.md fixes their
# arguments); rules hold no logic of their own. The four training rules are one
# rule (train_modality), reused with `use rule ... as ... with:`.
# seeds_per_job (config.yaml: all) decides whether one training job, and one
# two-stage prediction job, runs every seed of its model and subset or one. The
# configuration is validated against src/brainmets/schemas/config.schema.yaml
# before anything runs; jobs read it, resolved, from <results>/config.resolved.yaml.

from snakemake.utils import min_version

# 9.15 and 9.16 start more jobs than --cores after a checkpoint (tests/workflow/test_scheduling.py).
min_version("9.17")


# The embedded default, found next to this file from any working directory;
# --configfile FILE merges FILE over it, --config KEY=VALUE over both.
configfile: f"{workflow.basedir}/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/setup.smk"
include: "workflow/rules/modality_study.smk"
include: "workflow/rules/two_stage.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/ensembles.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/tracking.smk"


# Cheap bookkeeping and aggregation: run by Snakemake itself, never submitted to a cluster.
localrules:
    all,
    split,
    select_subset,
    tables,
    figures,


rule all:
    input:
        get_final_outputs(),
    default_target: True
