# Inference of the two-stage model (detector + segmentor together; the
# single-pass models are predicted by their training jobs) and the evaluation
# of every prediction (all studies, val and test).
#
# Job granularity: one prediction job per two-stage run covers both splits
# (torch + MONAI are imported once, ~5 s CPU); evaluation imports neither
# (torch-free verb).


rule predict_twostage:
    """Predict val and test with the two-stage model: the segmentor only on windows the detector keeps.

    Reads the weights inference.checkpoint names (best.pt or model.pt, both written by training), so
    changing that choice re-runs prediction and what follows, never training.
    """
    input:
        model=f"{RESULTS}/twostage/segmentor/{{subset}}/seed{{seed}}/{PREDICT_WEIGHTS}",
        detector=f"{RESULTS}/twostage/detector/{{subset}}/seed{{seed}}/{PREDICT_WEIGHTS}",
        cache=CACHE_DONE,
        splits=SPLITS_TSV,
    output:
        predictions=directory(f"{RESULTS}/twostage/{TWOSTAGE_COMBINED}/{{subset}}/seed{{seed}}/predictions"),
        inference=expand(
            f"{RESULTS}/twostage/{TWOSTAGE_COMBINED}/{{{{subset}}}}/seed{{{{seed}}}}/inference/{{split}}.tsv",
            split=EVAL_SPLITS,
        ),
    params:
        config=resolved_config,
        cache=cache_dir,
        out_dir=out_dir,
        splits=EVAL_SPLITS,
        inference=config["inference"],
        postprocessing=config["postprocessing"],
    threads: RES["predict"]["threads"]
    resources:
        mem_mb=RES["predict"]["mem_mb"],
        runtime=RES["predict"]["runtime"],
        gpu=RES["predict"]["gpu"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/twostage/{TWOSTAGE_COMBINED}/{{subset}}/seed{{seed}}/predict.log",
    benchmark:
        f"{BENCHMARKS}/twostage/{TWOSTAGE_COMBINED}/{{subset}}/seed{{seed}}/predict.tsv"
    shell:
        "brainmets predict --config {params.config} --model {input.model} --detector {input.detector} "
        "--cache {params.cache} --splits {input.splits} --split {params.splits} "
        "--out-dir {params.out_dir} --no-progress > {log} 2>&1"


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
    benchmark:
        f"{BENCHMARKS}/{{study}}/{{model}}/{{subset}}/seed{{seed}}/evaluate_{{split}}.tsv"
    shell:
        "brainmets evaluate --pred-dir {input.predictions}/{wildcards.split} --gt-dir {params.gt_dir} "
        "--out {output.metrics} --lesions-out {output.lesions} --cases-from {input.splits} "
        "--split {wildcards.split} --workers {threads} > {log} 2>&1"
