# Seed ensembles from the trained runs (no retraining), as Table 2 rows, and the
# segmentation of an external folder with the selected model.
#
# Per member of ensembles.members (the two-stage model of a subset, the modality
# study's network of a subset), all seeds, in ensembles/<source>/<subset>/:
#   mean/       `brainmets segment` on the raw val + test cases, seeds' probabilities averaged
#   mirror/     the same with mirroring (the 8 mirror images averaged)
#   mirror_pp/  mirror/ with small components removed; the minimum volumes
#               (postprocessing.json) are chosen on mirror/'s VALIDATION predictions only
# each evaluated like every run (metrics/<split>.tsv), read by the tables rule.
#
#   .venv/bin/snakemake --cores all segment_external --config external=DIR
#
# segments DIR (BraTS-layout case folders, no labels needed) into
# results/external/<DIR's name>/ with ensembles.external_model: all seeds,
# mirroring, its tuned postprocessing (recorded in the output's model.json).


wildcard_constraints:
    source="|".join(ENSEMBLE_SOURCES),
    variant="|".join(ENSEMBLE_VARIANTS),


rule segment_ensemble:
    """Predict val and test with a seed ensemble, through `brainmets segment` (raw cases in, as for new patients)."""
    input:
        unpack(get_ensemble_inputs),
    output:
        directory(f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/{{variant}}/predictions"),
    wildcard_constraints:
        variant="mean|mirror",
    params:
        config=resolved_config,
        cohort=COHORT_ROOT,
        models=ensemble_model_args,
        mirror=mirror_arg,
        splits=EVAL_SPLITS,
    threads: RES["predict"]["threads"]
    resources:
        mem_mb=RES["predict"]["mem_mb"],
        runtime=RES["predict"]["runtime"],
        gpu=RES["predict"]["gpu"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/{ENSEMBLES}/{{source}}/{{subset}}/{{variant}}/segment.log",
    benchmark:
        f"{BENCHMARKS}/{ENSEMBLES}/{{source}}/{{subset}}/{{variant}}/segment.tsv"
    shell:
        "brainmets segment {params.cohort} {params.models} --splits {input.splits} --split {params.splits} "
        "--out {output} {params.mirror} --no-postprocessing --config {params.config} --no-progress > {log} 2>&1"


rule tune_postprocessing:
    """Minimum component volume per region maximising lesion-wise Dice on the VALIDATION split (decision JSON)."""
    input:
        predictions=f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/mirror/predictions",
        splits=SPLITS_TSV,
    output:
        f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/postprocessing.json",
    params:
        gt_dir=COHORT_ROOT,
        grid=config["ensembles"]["postprocessing_grid_mm3"],
    threads: RES["evaluate"]["threads"]
    resources:
        mem_mb=RES["evaluate"]["mem_mb"],
        runtime=RES["evaluate"]["runtime"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/{ENSEMBLES}/{{source}}/{{subset}}/tune_postprocessing.log",
    benchmark:
        f"{BENCHMARKS}/{ENSEMBLES}/{{source}}/{{subset}}/tune_postprocessing.tsv"
    shell:
        "brainmets postprocess tune --pred-dir {input.predictions}/val --gt-dir {params.gt_dir} "
        "--splits {input.splits} --split val --grid {params.grid} --out {output} > {log} 2>&1"


rule postprocess_ensemble:
    """The mirrored ensemble's val and test predictions with the tuned postprocessing."""
    input:
        predictions=f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/mirror/predictions",
        decision=f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/postprocessing.json",
    output:
        directory(f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/mirror_pp/predictions"),
    params:
        splits=EVAL_SPLITS,
    threads: RES["evaluate"]["threads"]
    resources:
        mem_mb=RES["evaluate"]["mem_mb"],
        runtime=RES["evaluate"]["runtime"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/{ENSEMBLES}/{{source}}/{{subset}}/mirror_pp/postprocess.log",
    benchmark:
        f"{BENCHMARKS}/{ENSEMBLES}/{{source}}/{{subset}}/mirror_pp/postprocess.tsv"
    shell:
        "brainmets postprocess apply --decision {input.decision} --in-dir {input.predictions} "
        "--out-dir {output} --subdirs {params.splits} > {log} 2>&1"


rule evaluate_ensemble:
    """Legacy and lesion-wise metrics of one ensemble variant on one split, against the untouched ground truth."""
    input:
        predictions=f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/{{variant}}/predictions",
        splits=SPLITS_TSV,
    output:
        metrics=f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/{{variant}}/metrics/{{split}}.tsv",
        lesions=f"{ENSEMBLES_DIR}/{{source}}/{{subset}}/{{variant}}/metrics/{{split}}_lesions.tsv",
    params:
        gt_dir=COHORT_ROOT,
    threads: RES["evaluate"]["threads"]
    resources:
        mem_mb=RES["evaluate"]["mem_mb"],
        runtime=RES["evaluate"]["runtime"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/{ENSEMBLES}/{{source}}/{{subset}}/{{variant}}/evaluate_{{split}}.log",
    benchmark:
        f"{BENCHMARKS}/{ENSEMBLES}/{{source}}/{{subset}}/{{variant}}/evaluate_{{split}}.tsv"
    shell:
        "brainmets evaluate --pred-dir {input.predictions}/{wildcards.split} --gt-dir {params.gt_dir} "
        "--out {output.metrics} --lesions-out {output.lesions} --cases-from {input.splits} "
        "--split {wildcards.split} --workers {threads} > {log} 2>&1"


rule segment_external:
    """Segment the folder --config external=DIR with the selected ensemble (mirroring, tuned postprocessing)."""
    input:
        unpack(get_external_inputs),
    output:
        directory(f"{RESULTS}/external/{external_name()}"),
    params:
        config=resolved_config,
        external=EXTERNAL,
        models=ensemble_model_args,
    threads: RES["predict"]["threads"]
    resources:
        mem_mb=RES["predict"]["mem_mb"],
        runtime=RES["predict"]["runtime"],
        gpu=RES["predict"]["gpu"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/external/{external_name()}/segment.log",
    benchmark:
        f"{BENCHMARKS}/external/{external_name()}/segment.tsv"
    shell:
        "brainmets segment {params.external} {params.models} --out {output} --mirror "
        "--postprocessing {input.decision} --config {params.config} --no-progress > {log} 2>&1"
