# Two-stage model: a patch detector and a segmentor trained per subset in
# twostage.subsets (`selected` = the modality study's decision, read from
# selection/modality.json; canonical keys such as all four) x seeds, then
# predicted together (the segmentor runs only on windows the detector keeps)
# into twostage/twostage/<subset>/seed<k>/, evaluated by evaluation.smk.


rule train_detector:
    """Train the patch classifier (DenseNet) of the two-stage model."""
    input:
        unpack(get_train_inputs),
    output:
        f"{RESULTS}/twostage/detector/{{subset}}/seed{{seed}}/model.pt",
    params:
        config=resolved_config,
        cache=cache_dir,
        out_dir=out_dir,
        model=DETECTOR,
        selection=selection_arg,
        settings=twostage_settings,
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
        gpu=RES["train"]["gpu"],
        attempt=attempt_number,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/twostage/detector/{{subset}}/seed{{seed}}/train.log",
    benchmark:
        f"{BENCHMARKS}/twostage/detector/{{subset}}/seed{{seed}}/train.tsv"
    shell:
        "exec brainmets train --attempt {resources.attempt} --config {params.config} --study twostage --model {params.model} "
        "--subset {wildcards.subset} {params.selection} --seed {wildcards.seed} "
        "--cache {params.cache} --splits {input.splits} --out-dir {params.out_dir} "
        "--threads {threads} --no-progress > {log} 2>&1"


rule train_segmentor:
    """Train the residual, deep-supervised segmentor (on the detector's crops if configured)."""
    input:
        unpack(get_segmentor_inputs),
    output:
        f"{RESULTS}/twostage/segmentor/{{subset}}/seed{{seed}}/model.pt",
    params:
        config=resolved_config,
        cache=cache_dir,
        out_dir=out_dir,
        model=SEGMENTOR,
        selection=selection_arg,
        detector=detector_arg,
        settings=twostage_settings,
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
        gpu=RES["train"]["gpu"],
        attempt=attempt_number,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/twostage/segmentor/{{subset}}/seed{{seed}}/train.log",
    benchmark:
        f"{BENCHMARKS}/twostage/segmentor/{{subset}}/seed{{seed}}/train.tsv"
    shell:
        "exec brainmets train --attempt {resources.attempt} --config {params.config} --study twostage --model {params.model} "
        "--subset {wildcards.subset} {params.selection} {params.detector} --seed {wildcards.seed} "
        "--cache {params.cache} --splits {input.splits} --out-dir {params.out_dir} "
        "--threads {threads} --no-progress > {log} 2>&1"


rule predict_twostage:
    """Predict val and test with detector + segmentor (segmentor only on kept windows)."""
    input:
        segmentor=f"{RESULTS}/twostage/segmentor/{{subset}}/seed{{seed}}/model.pt",
        detector=f"{RESULTS}/twostage/detector/{{subset}}/seed{{seed}}/model.pt",
        cache=CACHE_DONE,
        splits=SPLITS_TSV,
    output:
        predictions=directory(f"{RESULTS}/twostage/twostage/{{subset}}/seed{{seed}}/predictions"),
        inference=expand(
            f"{RESULTS}/twostage/twostage/{{{{subset}}}}/seed{{{{seed}}}}/inference/{{split}}.tsv",
            split=EVAL_SPLITS,
        ),
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
        f"{LOGS}/twostage/twostage/{{subset}}/seed{{seed}}/predict.log",
    benchmark:
        f"{BENCHMARKS}/twostage/twostage/{{subset}}/seed{{seed}}/predict.tsv"
    shell:
        "brainmets predict --config {params.config} --model {input.segmentor} "
        "--detector {input.detector} --cache {params.cache} --splits {input.splits} "
        "--split {params.splits} --out-dir {params.out_dir} --no-progress > {log} 2>&1"
