import pytest

from brainmets.errors import BrainmetsError
from brainmets.training.settings import model_patch, model_task, training_settings


def test_defaults_are_the_papers():
    s = training_settings({})
    seg, det = s.segmentation, s.detection
    assert (seg.optimizer.name, seg.optimizer.lr, seg.optimizer.momentum, seg.optimizer.nesterov,
            seg.optimizer.weight_decay) == ("sgd", 0.01, 0.99, True, 3e-5)
    assert (seg.schedule.name, seg.schedule.exponent) == ("poly", 0.9)
    assert (seg.batch_patients, seg.crops_per_patient, seg.batch_size) == (2, 5, 10)
    assert seg.pos_fraction == pytest.approx(2 / 3)
    assert seg.iterations == 250_000
    assert (det.optimizer.name, det.optimizer.lr, det.optimizer.betas) == ("adam", 4e-4, (0.9, 0.999))
    assert (det.schedule.name, det.schedule.warmup_start_lr) == ("warmup_cosine", 1e-6)
    assert det.pos_fraction == 0.5 and det.batch_size == 10


def test_partial_sections_merge_over_defaults():
    s = training_settings({"training": {"segmentation": {"iterations": 7, "optimizer": {"lr": 0.1}},
                                        "augmentation": {"mirror_prob": 0.0}, "val_every": 0}})
    assert s.segmentation.iterations == 7
    assert s.segmentation.optimizer.lr == 0.1 and s.segmentation.optimizer.momentum == 0.99
    assert s.augmentation.mirror_prob == 0.0 and s.augmentation.rotate_prob == 0.2
    assert s.val_every == 0


def test_switching_optimizer_does_not_inherit_sgd_momentum():
    s = training_settings({"training": {"segmentation": {"optimizer": {"name": "adam", "lr": 1e-3}}}})
    assert s.segmentation.optimizer.name == "adam" and s.segmentation.optimizer.momentum == 0.0


@pytest.mark.parametrize("training, key", [
    ({"segmentaton": {}}, "training.segmentaton"),
    ({"segmentation": {"iteration": 5}}, "training.segmentation.iteration"),
    ({"detection": {"optimizer": {"momentun": 0.9}}}, "training.detection.optimizer.momentun"),
    ({"augmentation": {"rotate_probability": 0.1}}, "training.augmentation.rotate_probability"),
    ({"detection": {"detector_draws": 3}}, "training.detection.detector_draws"),
])
def test_unknown_key_is_named(training, key):
    with pytest.raises(BrainmetsError, match=f"unknown config key {key}"):
        training_settings({"training": training})


@pytest.mark.parametrize("training, message", [
    ({"segmentation": {"iterations": 0}}, "iterations must be >= 1"),
    ({"segmentation": {"pos_fraction": 1.5}}, "pos_fraction must be <= 1"),
    ({"augmentation": {"scale_range": [1.4, 0.7]}}, "low <= high"),
    ({"device": "tpu"}, "training.device"),
    ({"detection": {"schedule": {"name": "step"}}}, "schedule.name must be one of"),
])
def test_bad_values_are_explained(training, message):
    with pytest.raises(BrainmetsError, match=message):
        training_settings({"training": training})


def test_task_and_patch_from_the_model_spec():
    assert model_task("detector", {"arch": "densenet121"}) == "detection"
    assert model_task("unet", {"arch": "dynunet"}) == "segmentation"
    assert model_task("odd", {"arch": "dynunet", "task": "detection"}) == "detection"
    assert model_patch("unet", {"patch": [16, 16, 32]}) == (16, 16, 32)
    with pytest.raises(BrainmetsError, match="models.unet.patch"):
        model_patch("unet", {"patch": [16, 16]})
