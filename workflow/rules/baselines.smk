# Baselines: single-pass models (baselines.models) trained on baselines.subset
# (all four sequences by default) x seeds, exactly as the modality study's
# U-Net (predicted and evaluated on val and test by the training job).


use rule train_modality as train_baseline with:
    output:
        model=f"{RESULTS}/baselines/{{model}}/{{subset}}/seed{{seed}}/model.pt",
        best=f"{RESULTS}/baselines/{{model}}/{{subset}}/seed{{seed}}/best.pt",
        predictions=directory(f"{RESULTS}/baselines/{{model}}/{{subset}}/seed{{seed}}/predictions"),
        inference=expand(
            f"{RESULTS}/baselines/{{{{model}}}}/{{{{subset}}}}/seed{{{{seed}}}}/inference/{{split}}.tsv",
            split=EVAL_SPLITS,
        ),
        metrics=expand(
            f"{RESULTS}/baselines/{{{{model}}}}/{{{{subset}}}}/seed{{{{seed}}}}/metrics/{{split}}.tsv",
            split=EVAL_SPLITS,
        ),
        lesions=expand(
            f"{RESULTS}/baselines/{{{{model}}}}/{{{{subset}}}}/seed{{{{seed}}}}/metrics/{{split}}_lesions.tsv",
            split=EVAL_SPLITS,
        ),
    params:
        study="baselines",
    log:
        f"{LOGS}/baselines/{{model}}/{{subset}}/seed{{seed}}/train.log",
    benchmark:
        f"{BENCHMARKS}/baselines/{{model}}/{{subset}}/seed{{seed}}/train.tsv"
