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
        model=f"{RESULTS}/twostage/detector/{{subset}}/seed{{seed}}/model.pt",
        best=f"{RESULTS}/twostage/detector/{{subset}}/seed{{seed}}/best.pt",
    params:
        study="twostage",
        model=DETECTOR,
        settings=twostage_settings,
        predict="",
        inference=None,
        postprocessing=None,
    log:
        f"{LOGS}/twostage/detector/{{subset}}/seed{{seed}}/train.log",
    benchmark:
        f"{BENCHMARKS}/twostage/detector/{{subset}}/seed{{seed}}/train.tsv"


# On the crops the detector's best.pt accepts when twostage.train_on_detected: only then is
# the detector an input (get_segmentor_inputs), so only then does it train first.
use rule train_modality as train_segmentor with:
    input:
        unpack(get_segmentor_inputs),
    output:
        model=f"{RESULTS}/twostage/segmentor/{{subset}}/seed{{seed}}/model.pt",
        best=f"{RESULTS}/twostage/segmentor/{{subset}}/seed{{seed}}/best.pt",
    params:
        study="twostage",
        model=SEGMENTOR,
        settings=twostage_settings,
        predict="",
        inference=None,
        postprocessing=None,
    log:
        f"{LOGS}/twostage/segmentor/{{subset}}/seed{{seed}}/train.log",
    benchmark:
        f"{BENCHMARKS}/twostage/segmentor/{{subset}}/seed{{seed}}/train.tsv"
