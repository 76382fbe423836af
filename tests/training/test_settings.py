import pytest

from brainmets.config import ConfigError, validate_model, validate_section
from brainmets.training.settings import TrainingSettings, model_patch, model_task


def settings(training: dict | None = None) -> TrainingSettings:
    return TrainingSettings.from_section(validate_section("training", training))


def test_defaults_are_the_papers():
    s = settings()
    seg, det = s.segmentation, s.detection
    assert (seg.optimizer.name, seg.optimizer.lr, seg.optimizer.momentum, seg.optimizer.nesterov,
            seg.optimizer.weight_decay) == ("sgd", 0.01, 0.99, True, 3e-5)
    assert (seg.schedule.name, seg.schedule.exponent) == ("poly", 0.9)
    assert (seg.batch_patients, seg.crops_per_patient, seg.batch_size) == (2, 5, 10)
    assert seg.pos_fraction == 2 / 3
    assert seg.iterations == 250_000
    assert (seg.grad_clip, seg.deep_supervision_decay, seg.detector_draws) == (12.0, 0.5, 1)
    assert (det.optimizer.name, det.optimizer.lr, det.optimizer.betas) == ("adam", 4e-4, (0.9, 0.999))
    assert (det.schedule.name, det.schedule.warmup_iterations, det.schedule.warmup_start_lr) == (
        "warmup_cosine", 1010, 1e-6)
    assert det.pos_fraction == 0.5 and det.batch_size == 10 and det.iterations == 40_400
    assert s.augmentation.enabled and s.augmentation.scale_range == (0.7, 1.4)
    assert (s.checkpoint_every, s.val_every, s.device, s.channels_last) == (1000, 1000, "auto", "auto")


def test_partial_sections_merge_over_defaults():
    s = settings({"segmentation": {"iterations": 7, "optimizer": {"lr": 0.1}},
                  "augmentation": {"mirror_prob": 0.0}, "val_every": 0})
    assert s.segmentation.iterations == 7
    assert s.segmentation.optimizer.lr == 0.1 and s.segmentation.optimizer.momentum == 0.99
    assert s.augmentation.mirror_prob == 0.0 and s.augmentation.rotate_prob == 0.2
    assert s.val_every == 0


def test_switching_optimizer_starts_from_its_own_defaults():
    s = settings({"segmentation": {"optimizer": {"name": "adam", "lr": 1e-3}},
                  "detection": {"optimizer": {"name": "sgd", "lr": 0.1}, "schedule": {"name": "poly"}}})
    seg, det = s.segmentation.optimizer, s.detection.optimizer
    assert (seg.name, seg.momentum, seg.betas, seg.weight_decay) == ("adam", None, (0.9, 0.999), 0.0)
    assert (det.name, det.momentum, det.nesterov, det.weight_decay) == ("sgd", 0.0, False, 0.0)
    assert (s.detection.schedule.exponent, s.detection.schedule.warmup_iterations) == (0.9, None)


def test_channels_last_accepts_yaml_booleans():
    assert settings({"channels_last": False}).channels_last == "false"
    assert settings({"channels_last": True}).channels_last == "true"


@pytest.mark.parametrize("training, key, hint", [
    ({"segmentaton": {}}, "training.segmentaton", "did you mean training.segmentation?"),
    ({"segmentation": {"iteration": 5}}, "training.segmentation.iteration", "did you mean"),
    ({"detection": {"optimizer": {"momentun": 0.9}}}, "training.detection.optimizer.momentun", "betas, lr, name"),
    ({"augmentation": {"rotate_probability": 0.1}}, "training.augmentation.rotate_probability", "rotate_prob"),
    ({"detection": {"detector_draws": 3}}, "training.detection.detector_draws", "allowed keys here"),
])
def test_unknown_key_is_named(training, key, hint):
    with pytest.raises(ConfigError, match=f"unknown config key {key}") as info:
        settings(training)
    assert hint in str(info.value)


@pytest.mark.parametrize("training, message", [
    ({"segmentation": {"iterations": 0}}, "training.segmentation.iterations: 0 is less than the minimum of 1"),
    ({"segmentation": {"pos_fraction": 1.5}}, "training.segmentation.pos_fraction: 1.5 is greater than the maximum"),
    ({"device": "tpu"}, "training.device"),
    ({"detection": {"schedule": {"name": "step"}}},
     "training.detection.schedule.name is 'step'; allowed: poly, warmup_cosine, constant"),
    ({"segmentation": {"optimizer": {"name": "adam"}}}, "training.segmentation.optimizer: 'lr' is a required"),
])
def test_bad_values_are_explained(training, message):
    with pytest.raises(ConfigError, match=message):
        settings(training)


def test_task_and_patch_from_the_model_entry():
    assert model_task("detector", validate_model("detector", {"arch": "densenet121", "patch": [16] * 3})) == "detection"
    assert model_task("unet", validate_model("unet", {"arch": "dynunet", "patch": [16] * 3})) == "segmentation"
    odd = validate_model("odd", {"arch": "dynunet", "task": "detection", "patch": [16, 16, 32]})
    assert model_task("odd", odd) == "detection"
    assert model_patch("odd", odd) == (16, 16, 32)
    with pytest.raises(ConfigError, match="models.unet.patch"):
        validate_model("unet", {"arch": "dynunet", "patch": [16, 16]})
