import math

import pytest
import torch

from brainmets.training.losses import (
    deep_supervision_weights,
    detection_loss,
    detection_targets,
    dice_bce_loss,
    region_targets,
    segmentation_loss,
    soft_dice_loss,
)
from brainmets.training.schedules import LearningRate, build_optimizer, build_scheduler
from brainmets.config import validate_section
from brainmets.training.settings import ScheduleSettings, TrainingSettings


def test_poly_schedule_values():
    lr = LearningRate(ScheduleSettings("poly", exponent=0.9), 0.01, 100)
    assert lr(0) == 0.01
    assert lr(50) == pytest.approx(0.01 * 0.5**0.9)
    assert lr(100) == 0.0


def test_warmup_then_cosine_values():
    lr = LearningRate(ScheduleSettings("warmup_cosine", warmup_iterations=10, warmup_start_lr=1e-6, min_lr=0.0), 4e-4, 110)
    assert lr(0) == pytest.approx(1e-6)
    assert lr(5) == pytest.approx(1e-6 + (4e-4 - 1e-6) * 0.5)
    assert lr(10) == pytest.approx(4e-4)  # warm-up done: cosine starts at the peak
    assert lr(60) == pytest.approx(2e-4)  # half-way through the cosine
    assert lr(110) == pytest.approx(0.0, abs=1e-12)


def test_warmup_longer_than_budget_is_clipped():
    lr = LearningRate(ScheduleSettings("warmup_cosine", warmup_iterations=50, warmup_start_lr=0.0, min_lr=0.0), 1.0, 10)
    assert lr(5) == pytest.approx(0.5) and lr(9) == pytest.approx(0.9)  # steps 0..9 all warm up


def test_scheduler_drives_the_optimizer_per_step():
    settings = TrainingSettings.from_section(validate_section("training")).segmentation  # the paper's
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], settings.optimizer)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"]
    sched = build_scheduler(opt, settings.schedule, 4)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.01 * (1 - t / 4) ** 0.9 for t in range(4)])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_multi_tensor_optimiser_steps_bitwise_like_the_per_tensor_loop(name):
    """build_optimizer's foreach path, and the Trainer's foreach gradient clipping, must not move the
    study's weights (they are there for speed only)."""
    section = {"segmentation": {"optimizer": {"name": name, "lr": 0.02, "weight_decay": 1e-3}}}
    settings = TrainingSettings.from_section(validate_section("training", section)).segmentation.optimizer
    shapes = [(8, 4, 3, 3, 3), (8,), (16, 8, 3, 3, 3), (3, 16, 1, 1, 1)]
    runs = []
    for foreach in (True, False):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        opt = build_optimizer(params, settings)
        assert opt.param_groups[0]["foreach"]
        opt.param_groups[0]["foreach"] = foreach
        grads = torch.Generator().manual_seed(1)
        for step in range(12):
            for i, p in enumerate(params):  # one tensor without a gradient now and then, as in train-on-detected
                p.grad = None if (step + i) % 5 == 0 else torch.randn(p.shape, generator=grads)
            torch.nn.utils.clip_grad_norm_(params, 12.0, foreach=foreach)
            opt.step()
        runs.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_region_targets_are_nested_brats_regions():
    label = torch.tensor([0, 1, 2, 3], dtype=torch.float32).reshape(1, 1, 4, 1, 1)
    t = region_targets(label)[0, :, :, 0, 0]
    assert t.tolist() == [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]  # WT, TC, ET
    # per sample of a batch, labels rounded first (resampled maps hold values near the integers)
    batch = torch.tensor([[3.0001, 0.4, 1.0], [2.0, 0.0, 2.9999]]).reshape(2, 1, 3, 1, 1)
    t = region_targets(batch)[..., 0, 0]
    assert t.dtype == torch.float32 and t.shape == (2, 3, 3)
    assert t.tolist() == [[[1, 0, 1], [1, 0, 1], [1, 0, 0]], [[1, 0, 1], [0, 0, 1], [0, 0, 1]]]


def test_detection_targets_mark_patches_holding_tumour():
    label = torch.zeros(3, 1, 4, 4, 4)
    label[1, 0, 2, 2, 2] = 2  # edema alone is tumour (WT)
    assert detection_targets(label).flatten().tolist() == [0.0, 1.0, 0.0]


def test_deep_supervision_weights():
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_dice_of_perfect_and_opposite_predictions():
    target = torch.zeros(1, 3, 4, 4, 4)
    target[:, :, :2] = 1
    confident = (target * 2 - 1) * 50  # sigmoid = 1 where target, 0 elsewhere
    assert soft_dice_loss(confident, target).item() == pytest.approx(0.0, abs=1e-5)
    assert soft_dice_loss(-confident, target).item() == pytest.approx(1.0, abs=1e-5)
    # BCE of logit 0 is log 2 everywhere; Dice of p = 0.5 against half-filled targets is 1 - 2*16/(32+32)
    zero = torch.zeros_like(target)
    assert dice_bce_loss(zero, target).item() == pytest.approx(math.log(2) + 0.5, rel=1e-4)


def test_deep_supervision_weighting_and_target_resizing():
    target = torch.zeros(2, 3, 8, 8, 8)
    target[:, :, 2:6, 2:6, 2:6] = 1
    main = torch.randn(2, 3, 8, 8, 8)
    aux_full = torch.randn(2, 3, 8, 8, 8)
    aux_half = torch.randn(2, 3, 4, 4, 4)
    expected = 2 / 3 * dice_bce_loss(main, target) + 1 / 3 * dice_bce_loss(aux_full, target)
    assert segmentation_loss(main, [aux_full], target).item() == pytest.approx(expected.item(), rel=1e-6)
    # a coarser head is scored against the nearest-neighbour downsampled target
    small = target[:, :, ::2, ::2, ::2]
    expected = 2 / 3 * dice_bce_loss(main, target) + 1 / 3 * dice_bce_loss(aux_half, small)
    assert segmentation_loss(main, [aux_half], target).item() == pytest.approx(expected.item(), rel=1e-6)
    extra = torch.tensor(0.25)
    assert segmentation_loss(main, [], target, extra=extra).item() == pytest.approx(
        dice_bce_loss(main, target).item() + 0.25, rel=1e-6)


def test_detection_loss_is_bce_with_logits():
    logits = torch.tensor([[0.0], [2.0]])
    target = torch.tensor([[1.0], [0.0]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert detection_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
