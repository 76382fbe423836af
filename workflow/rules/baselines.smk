# Baselines: single-pass models (baselines.models) trained on baselines.subset
# (all four sequences by default) x seeds, exactly as the modality study's
# U-Net (predicted and evaluated on val and test by the training job).


use rule train_modality as train_baseline with:
    output:
        **train_outputs("baselines/{model}/{subset}"),
    params:
        study="baselines",
    priority: 0
    log:
        job_log("baselines/{model}/{subset}", "train.log"),
    benchmark:
        job_benchmark("baselines/{model}/{subset}", "train.tsv")
