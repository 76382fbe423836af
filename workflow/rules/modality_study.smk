# Modality impact study: the 3D U-Net (modality_study.model) trained on each
# modality subset (all 15 by default) x seeds, each predicted and evaluated on
# val and test by its training job, then the subset selection.


rule train_modality:
    """Train one network on one subset and seed (resumes from checkpoint.pt), then predict and evaluate val and test.

    With seeds_per_job: all (the default) one job does this for every seed in
    turn, one process for all (each run as its own one-seed job would); with 1,
    one job per seed (the {seed} wildcard).

    Writes model.pt (final weights) and best.pt (best validation score, or the
    final weights without validation), then, in the same process (torch and
    MONAI start once), the predictions of val and test with the weights
    inference.checkpoint names, as `brainmets predict` would, and their metrics
    against the cohort's ground truth, as `brainmets evaluate` would (the same
    code, byte-identical files). A changed inference setting or ground-truth
    root re-runs this job: it resumes from the final checkpoint.pt, trains no
    step, rewrites the same weights, predicts and evaluates again. A failed
    evaluation fails the job (Snakemake removes its outputs). Here the study's
    U-Net per modality subset; the other training rules (two-stage detector and
    segmentor, which predict together in predict_twostage; baselines) are this
    rule with their own outputs and params (`use rule train_modality as ...`).
    """
    input:
        unpack(get_train_inputs),
    output:
        **train_outputs("modality/{model}/{subset}"),
    params:
        config=resolved_config,
        cache=cache_dir,
        out_dir=train_out_dirs,
        seeds=job_seeds,
        study="modality",
        model=model_wildcard,
        selection=selection_arg,
        detector=detector_arg,
        settings=model_settings,
        predict=PREDICT_ARGS,
        inference=PREDICT_INFERENCE,
        postprocessing=config["postprocessing"],
    threads: RES["train"]["threads"]
    priority: PRIORITY_MODALITY
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
        gpu=RES["train"]["gpu"],
        attempt=attempt_number,
    conda:
        CONDA_ENV
    log:
        job_log("modality/{model}/{subset}", "train.log"),
    benchmark:
        job_benchmark("modality/{model}/{subset}", "train.tsv")
    shell:
        # exec: SLURM's warning SIGTERM (profile: --signal=TERM@lead) must reach brainmets, which
        # checkpoints and exits 75; a bash in between would die at once and lose the step.
        "exec brainmets train --attempt {resources.attempt} --config {params.config} --study {params.study} --model {params.model} "
        "--subset {wildcards.subset} {params.selection} {params.detector} --seed {params.seeds} "
        "--cache {params.cache} --splits {input.splits} --out-dir {params.out_dir} "
        "--threads {threads} {params.predict} --evaluate-workers {threads} --no-progress > {log} 2>&1"


# modality_study.subsets_per_job > 1: one job per group of subsets (train_modality_group1, 2, ...),
# each `brainmets train` running every seed of its subsets in turn, one process (--subset and
# --seed zipped, one pair per run): the runs, files and numbers of train_modality, with torch,
# MONAI and MLflow started once per group. Preferred over train_modality for the same files.
for _number, _subsets in enumerate(MODALITY_JOB_GROUPS or [], start=1):

    rule:
        name:
            f"train_modality_group{_number}"
        input:
            cache=CACHE_DONE,
            splits=SPLITS_TSV,
        output:
            **group_train_outputs(_subsets),
        params:
            config=resolved_config,
            cache=cache_dir,
            out_dir=train_out_dirs,
            subsets=" ".join(subset for subset in _subsets for _ in SEEDS),
            seeds=" ".join(str(seed) for _ in _subsets for seed in SEEDS),
            study="modality",
            model=MODALITY_MODEL,
            settings=settings_of_model(MODALITY_MODEL),
            predict=PREDICT_ARGS,
            inference=PREDICT_INFERENCE,
            postprocessing=config["postprocessing"],
        threads: RES["train"]["threads"]
        priority: PRIORITY_MODALITY
        resources:
            mem_mb=RES["train"]["mem_mb"],
            runtime=RES["train"]["runtime"],
            gpu=RES["train"]["gpu"],
            attempt=attempt_number,
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/modality/{MODALITY_MODEL}/groups/group{_number}/train.log",
        benchmark:
            f"{BENCHMARKS}/modality/{MODALITY_MODEL}/groups/group{_number}/train.tsv"
        shell:
            "exec brainmets train --attempt {resources.attempt} --config {params.config} --study {params.study} "
            "--model {params.model} --subset {params.subsets} --seed {params.seeds} --cache {params.cache} "
            "--splits {input.splits} --out-dir {params.out_dir} --threads {threads} {params.predict} "
            "--evaluate-workers {threads} --no-progress > {log} 2>&1"

    workflow.ruleorder(f"train_modality_group{_number}", "train_modality")


rule select_subset:
    """Rank the subsets on the selection split and write the decision (or the fixed override)."""
    input:
        get_modality_metrics,
    output:
        SELECTION_JSON,
    params:
        results=results_dir,
        model=MODALITY_MODEL,
        metric=config["selection"]["metric"],
        split=config["selection"]["split"],
        regions=config["selection"]["regions"],
        subsets=MODALITY_SUBSETS,
        seeds=SEEDS,
        extra=selection_extra_args(),
    priority: PRIORITY_MODALITY
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/select_subset.log",
    benchmark:
        f"{BENCHMARKS}/select_subset.tsv"
    shell:
        "brainmets select --results {params.results} --study modality --model {params.model} "
        "--metric {params.metric} --split {params.split} --regions {params.regions} "
        "--subsets {params.subsets} --seeds {params.seeds} {params.extra} --out {output} > {log} 2>&1"
