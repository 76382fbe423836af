# Baselines: single-pass models (baselines.models) trained on baselines.subset
# (all four sequences by default) x seeds, exactly as the modality study's
# U-Net; prediction and evaluation: evaluation.smk.


rule train_baseline:
    """Train one baseline network on one subset and seed."""
    input:
        unpack(get_train_inputs),
    output:
        f"{RESULTS}/baselines/{{model}}/{{subset}}/seed{{seed}}/model.pt",
    params:
        config=resolved_config,
        cache=cache_dir,
        out_dir=out_dir,
        selection=selection_arg,
        settings=model_settings,
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
        gpu=RES["train"]["gpu"],
        attempt=attempt_number,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/baselines/{{model}}/{{subset}}/seed{{seed}}/train.log",
    benchmark:
        f"{BENCHMARKS}/baselines/{{model}}/{{subset}}/seed{{seed}}/train.tsv"
    shell:
        "exec brainmets train --attempt {resources.attempt} --config {params.config} --study baselines --model {wildcards.model} "
        "--subset {wildcards.subset} {params.selection} --seed {wildcards.seed} "
        "--cache {params.cache} --splits {input.splits} --out-dir {params.out_dir} "
        "--threads {threads} --no-progress > {log} 2>&1"
