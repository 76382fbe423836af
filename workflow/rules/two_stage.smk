# Two-stage model: a patch detector and a segmentor trained per subset in
# twostage.subsets (`selected` = the modality study's decision, read from
# selection/modality.json; canonical keys such as all four) x seeds, as the
# modality study's training rule with the configured detector and segmentor
# models. Neither predicts on its own (params predict, inference and postprocessing empty):
# they are predicted together (the segmentor runs only on windows the detector
# keeps) and evaluated into twostage/combined/<subset>/seed<k>/ by one job,
# predict_twostage (evaluation.smk).


use rule train_modality as train_detector with:
    output:
        **train_outputs("twostage/detector/{subset}", predicted=False),
    params:
        study="twostage",
        model=DETECTOR,
        settings=twostage_settings,
        predict="",
        inference=None,
        postprocessing=None,
    priority: PRIORITY_TWOSTAGE
    log:
        job_log("twostage/detector/{subset}", "train.log"),
    benchmark:
        job_benchmark("twostage/detector/{subset}", "train.tsv")


# On the crops the detector's best.pt accepts when twostage.train_on_detected: only then is
# the detector an input (get_segmentor_inputs), so only then does it train first.
use rule train_modality as train_segmentor with:
    input:
        unpack(get_segmentor_inputs),
    output:
        **train_outputs("twostage/segmentor/{subset}", predicted=False),
    params:
        study="twostage",
        model=SEGMENTOR,
        settings=twostage_settings,
        predict="",
        inference=None,
        postprocessing=None,
    priority: PRIORITY_TWOSTAGE
    log:
        job_log("twostage/segmentor/{subset}", "train.log"),
    benchmark:
        job_benchmark("twostage/segmentor/{subset}", "train.tsv")
