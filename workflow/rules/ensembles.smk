# Seed ensembles from the trained runs (no retraining), as Table 2 rows, and the
# segmentation of an external folder with the selected model.
#
# Per member of ensembles.members (the two-stage model of a subset, the modality
# study's network of a subset), all seeds, one job (`brainmets ensemble`) writes
# ensembles/<source>/<subset>/:
#   mean/       the raw val + test cases segmented as new patients are, seeds' probabilities averaged
#   mirror/     the same with mirroring (the mirror images of inference.mirror_axes averaged; mean/ is their identity
#               image, so both come from the same passes)
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


rule ensemble:
    """A seed ensemble on val and test without and with mirroring; postprocessing tuned on val; all evaluated."""
    input:
        unpack(get_ensemble_inputs),
    output:
        **ensemble_outputs(f"{ENSEMBLES_DIR}/{{source}}/{{subset}}"),
    params:
        config=resolved_config,
        cohort=COHORT_ROOT,
        models=ensemble_model_args,
        splits=EVAL_SPLITS,
        grid=config["ensembles"]["postprocessing_grid_mm3"],
        out=f"{ENSEMBLES_DIR}/{{source}}/{{subset}}",
        # read through --config: a changed setting reruns the job (as predict_twostage)
        inference=config["inference"],
        postprocessing=config["postprocessing"],
    threads: RES["predict"]["threads"]
    priority: PRIORITY_TWOSTAGE
    resources:
        mem_mb=RES["predict"]["mem_mb"],
        runtime=RES["predict"]["runtime"],
        gpu=RES["predict"]["gpu"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/{ENSEMBLES}/{{source}}/{{subset}}/ensemble.log",
    benchmark:
        f"{BENCHMARKS}/{ENSEMBLES}/{{source}}/{{subset}}/ensemble.tsv"
    shell:
        "brainmets ensemble {params.cohort} {params.models} --splits {input.splits} --split {params.splits} "
        "--grid {params.grid} --out {params.out} --config {params.config} --workers {threads} "
        "--no-progress > {log} 2>&1"


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
