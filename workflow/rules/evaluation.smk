# Inference and evaluation of the two-stage model (detector + segmentor
# together). The single-pass models are predicted and evaluated by their
# training jobs, the seed ensembles in ensembles.smk.
#
# Job granularity: one job covers both splits and their evaluation (torch +
# MONAI are imported once, ~5 s CPU; no job per split), for every seed of a
# subset with seeds_per_job: all, for one seed with 1.


rule predict_twostage:
    """Predict val and test with the two-stage model (the segmentor only on windows the detector keeps), then evaluate them.

    Each seed's segmentor with the same seed's detector, into twostage/combined/<subset>/seed<k>/.

    Reads the weights inference.checkpoint names (best.pt or model.pt, both written by training), so
    changing that choice re-runs prediction and what follows, never training. The metrics are
    those `brainmets evaluate` writes (the same code), against the cohort's ground truth; a failed
    evaluation fails the job.
    """
    input:
        model=job_paths("twostage/segmentor/{subset}", PREDICT_WEIGHTS),
        detector=job_paths("twostage/detector/{subset}", PREDICT_WEIGHTS),
        cache=CACHE_DONE,
        splits=SPLITS_TSV,
    output:
        **prediction_outputs(f"twostage/{TWOSTAGE_COMBINED}/{{subset}}"),
    params:
        config=resolved_config,
        cache=cache_dir,
        out_dir=predict_out_dirs,
        splits=EVAL_SPLITS,
        gt_dir=COHORT_ROOT,
        inference=PREDICT_INFERENCE,
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
        job_log(f"twostage/{TWOSTAGE_COMBINED}/{{subset}}", "predict.log"),
    benchmark:
        job_benchmark(f"twostage/{TWOSTAGE_COMBINED}/{{subset}}", "predict.tsv")
    shell:
        "brainmets predict --config {params.config} --model {input.model} --detector {input.detector} "
        "--cache {params.cache} --splits {input.splits} --split {params.splits} "
        "--out-dir {params.out_dir} --evaluate-gt {params.gt_dir} --evaluate-workers {threads} "
        "--no-progress > {log} 2>&1"
