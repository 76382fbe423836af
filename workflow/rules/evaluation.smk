# Inference of the single-pass models (modality study and baselines) and the
# evaluation of every prediction (all studies, val and test). The two-stage
# model's combined prediction is in two_stage.smk.
#
# Job granularity: one predict job per run covers both splits (torch + MONAI
# are imported once, ~5 s); evaluation imports neither (torch-free verb).


rule predict:
    """Predict the val and test cases with one single-pass model (modality study or baseline)."""
    input:
        model=f"{RESULTS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/model.pt",
        cache=CACHE_DONE,
        splits=SPLITS_TSV,
    output:
        predictions=directory(f"{RESULTS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/predictions"),
        inference=expand(
            f"{RESULTS}/{{{{study}}}}/{{{{model}}}}/{{{{subset}}}}/seed{{{{seed}}}}/inference/{{split}}.tsv",
            split=EVAL_SPLITS,
        ),
    wildcard_constraints:
        study="modality|baselines",
    params:
        config=resolved_config,
        cache=cache_dir,
        out_dir=out_dir,
        splits=EVAL_SPLITS,
        inference=config["inference"],
    threads: RES["predict"]["threads"]
    resources:
        mem_mb=RES["predict"]["mem_mb"],
        runtime=RES["predict"]["runtime"],
        gpu=RES["predict"]["gpu"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/predict.log",
    benchmark:
        f"{BENCHMARKS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/predict.tsv"
    shell:
        "brainmets predict --config {params.config} --model {input.model} --cache {params.cache} "
        "--splits {input.splits} --split {params.splits} --out-dir {params.out_dir} --no-progress "
        "> {log} 2>&1"


rule evaluate:
    """Legacy and lesion-wise metrics of one run on one split, against the untouched ground truth."""
    input:
        predictions=f"{RESULTS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/predictions",
        splits=SPLITS_TSV,
    output:
        metrics=f"{RESULTS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/metrics/{{split}}.tsv",
        lesions=f"{RESULTS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/metrics/{{split}}_lesions.tsv",
    params:
        gt_dir=COHORT_ROOT,
    threads: RES["evaluate"]["threads"]
    resources:
        mem_mb=RES["evaluate"]["mem_mb"],
        runtime=RES["evaluate"]["runtime"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/evaluate_{{split}}.log",
    shell:
        "brainmets evaluate --pred-dir {input.predictions}/{wildcards.split} --gt-dir {params.gt_dir} "
        "--out {output.metrics} --lesions-out {output.lesions} --cases-from {input.splits} "
        "--split {wildcards.split} --workers {threads} > {log} 2>&1"
