"""The configurable parts of the training recipe where the authors' code differs from the default.

Each test sets one key the way ``configs/paper.yaml`` does and checks what it
changes against a value computed by hand (see docs/paper-fidelity.md).
"""

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainmets.config import validate_section
from brainmets.constants import subset_channels
from brainmets.training.augment import PatchAugmenter
from brainmets.training.losses import (
    deep_supervision_weights,
    detection_targets,
    dice_bce_loss,
    segmentation_loss,
    soft_dice_loss,
)
from brainmets.training.sampling import PatchSampler, crop_slices
from brainmets.training.settings import AugmentationSettings, training_settings

#: sha256 of 64 default negative centres of the lesion pair (rng seed 1), drawn before negative_centre existed
DEFAULT_NEGATIVE_CENTRES = "77a1c69532b8d52cdc24169ab932d95be4c4f007e080e7454512791887c8ed28"


def _hand_dice(prob, target, dims, smooth_nr, smooth_dr):
    inter = (prob * target).sum(dims)
    return 1 - ((2 * inter + smooth_nr) / (prob.sum(dims) + target.sum(dims) + smooth_dr)).mean()


def test_per_sample_dice_is_the_authors_monai_dice_and_differs_from_batch_dice():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0, 0.0, -2.0, 3.0]).reshape(2, 1, 4, 1, 1).repeat(1, 3, 1, 1, 1)
    target = torch.zeros(2, 3, 4, 1, 1)
    target[0, :, :2] = 1  # patch 1 has no region at all: per-sample Dice scores it alone
    prob = torch.sigmoid(logits)
    sample = _hand_dice(prob, target, [2, 3, 4], 0.0, 1e-5)
    batch = _hand_dice(prob, target, [0, 2, 3, 4], 1e-5, 1e-5)
    assert soft_dice_loss(logits, target, "sample").item() == pytest.approx(sample.item(), rel=1e-6)
    assert soft_dice_loss(logits, target, "batch").item() == pytest.approx(batch.item(), rel=1e-6)
    assert abs(sample.item() - batch.item()) > 0.05
    # an empty patch predicted (nearly) empty costs almost a full 1 per channel in per-sample Dice
    empty = torch.zeros(1, 3, 4, 1, 1)
    assert soft_dice_loss(torch.full_like(empty, -20.0), empty, "sample").item() == pytest.approx(1.0, abs=1e-3)


def test_unnormalised_deep_supervision_weights_four_heads():
    assert deep_supervision_weights(4, 0.5, normalise=False) == [1.0, 0.5, 0.25, 0.125]
    torch.manual_seed(0)
    target = (torch.rand(2, 3, 8, 8, 8) > 0.7).float()
    heads = [torch.randn(2, 3, 8, 8, 8) for _ in range(4)]
    expected = sum(w * dice_bce_loss(h, target, "sample") for w, h in zip([1, 0.5, 0.25, 0.125], heads))
    got = segmentation_loss(heads[0], heads[1:], target, 0.5, normalise=False, dice="sample")
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # normalised, the same heads give the loss on the scale of one head: 1.875 times smaller
    normalised = segmentation_loss(heads[0], heads[1:], target, 0.5, normalise=True, dice="sample")
    assert got.item() == pytest.approx(1.875 * normalised.item(), rel=1e-6)


def test_detector_label_rules_on_a_single_voxel():
    label = torch.zeros(3, 1, 4, 4, 4)
    label[0, 0, 1, 1, 1] = 1  # one NETC voxel: raw label sum 1
    label[1, 0, 1, 1, 1] = 2  # one edema voxel: raw label sum 2
    assert detection_targets(label, "any_tumour").flatten().tolist() == [1.0, 1.0, 0.0]
    assert detection_targets(label, "label_sum").flatten().tolist() == [0.0, 1.0, 0.0]


@pytest.fixture(scope="module")
def lesion_pair(tmp_path_factory, case_writer):
    """One case with a large lesion (radius 6) and a small one (radius 1), edema around both."""
    cache = tmp_path_factory.mktemp("pair")
    case_writer(cache, "pair", 0, [((11, 11, 10), 6), ((27, 26, 18), 1)])
    return cache


def _sampler(cache, **keys):
    return PatchSampler(cache, ["pair"], subset_channels("t1c"), (8, 8, 8), batch_patients=1, crops_per_patient=1,
                        pos_fraction=1.0, task="segmentation", seed=0, **keys)


def _centres(sampler, n=600):
    rng = np.random.default_rng(0)
    return np.array([sampler._positive_centre(sampler.cases[0], rng) for _ in range(n)])


def test_voxel_uniform_centres_hit_the_large_lesion_in_proportion_to_its_size(lesion_pair):
    label = np.asarray(_sampler(lesion_pair).cases[0].label)
    big = np.zeros(label.shape, bool)
    big[:20, :20, :] = True
    share = (label[big] > 0).sum() / (label > 0).sum()
    for centre_rule, expected in (("lesion", 0.5), ("voxel", share)):
        centres = _centres(_sampler(lesion_pair, positive_centre=centre_rule))
        hit_big = big[tuple(centres.T)].mean()
        assert hit_big == pytest.approx(expected, abs=0.06), centre_rule
    assert share > 0.9


def test_tc_et_centres_never_fall_on_edema(lesion_pair):
    label = np.asarray(_sampler(lesion_pair).cases[0].label)
    wt = label[tuple(_centres(_sampler(lesion_pair, positive_centre="voxel")).T)]
    core = label[tuple(_centres(_sampler(lesion_pair, positive_centre="voxel", positive_region="tc_et")).T)]
    assert (wt == 2).mean() > 0.3  # edema is most of the whole tumour
    assert set(np.unique(core)) <= {1.0, 3.0}


def test_detector_negatives_may_hold_tumour_only_when_asked(lesion_pair):
    def tumour_in_negatives(tumour_free):
        s = PatchSampler(lesion_pair, ["pair"], subset_channels("t1c"), (8, 8, 8), batch_patients=1,
                         crops_per_patient=1, pos_fraction=0.0, task="detection", seed=0,
                         tumour_free_negatives=tumour_free)
        rng = np.random.default_rng(1)
        case = s.cases[0]
        crops = [crop_slices(case.label.shape, s._negative_centre(case, rng), s.patch)[0] for _ in range(200)]
        return sum(bool(np.any(case.label[c] > 0)) for c in crops)

    assert tumour_in_negatives(True) == 0
    assert tumour_in_negatives(False) > 10


def test_authors_intensity_transforms_are_off_by_default_and_keep_the_mean_when_on():
    default = AugmentationSettings.from_section(validate_section("training")["augmentation"])
    default_names = [type(t).__name__ for t in PatchAugmenter(default).transform.transforms]
    assert not any("AdjustContrast" in n or "FixedMean" in n for n in default_names)
    only_gamma = AugmentationSettings.from_section(validate_section("training", {"augmentation": {
        "rotate_prob": 0.0, "scale_prob": 0.0, "noise_prob": 0.0, "smooth_prob": 0.0, "intensity_scale_prob": 0.0,
        "low_resolution_prob": 0.0, "mirror_prob": 0.0, "gamma_prob": 1.0}})["augmentation"])
    augmenter = PatchAugmenter(only_gamma)
    augmenter.reseed(3)
    image = np.random.default_rng(0).normal(0, 1, (2, 8, 8, 8)).astype(np.float32)
    out, _ = augmenter(image, np.zeros((1, 8, 8, 8), np.float32))
    assert not torch.allclose(out, torch.from_numpy(image))
    assert out.mean().item() == pytest.approx(float(image.mean()), abs=1e-4)  # retain_stats


def test_paper_keys_reach_the_settings():
    section = validate_section("training", {"segmentation": {"dice": "sample", "deep_supervision_normalise": False,
                                                             "positive_region": "tc_et"},
                                            "detection": {"target": "label_sum", "negatives": "brain"}})
    ts = training_settings({"training": section})
    assert (ts.segmentation.dice, ts.segmentation.deep_supervision_normalise) == ("sample", False)
    assert ts.segmentation.positive_region == "tc_et"
    assert (ts.detection.target, ts.detection.negatives) == ("label_sum", "brain")
    # the defaults keep the project's choices
    default = training_settings({"training": validate_section("training")})
    assert (default.segmentation.dice, default.detection.target) == ("batch", "any_tumour")


def test_trainer_uses_the_paper_keys(tiny_data, tiny_config, tmp_path):
    from brainmets.models import forward_outputs
    from brainmets.training.losses import region_targets
    from brainmets.training.loop import RunRequest
    from brainmets.training.trainer import Trainer

    cache, splits = tiny_data
    tiny_config["training"]["segmentation"].update(dice="sample", deep_supervision_normalise=False,
                                                   positive_centre="voxel", positive_region="tc_et",
                                                   negative_centre="background")
    tiny_config["training"]["augmentation"].update(affine="joint", scope="volume")
    tiny_config["training"]["detection"].update(target="label_sum", negatives="brain")
    run = dict(study="twostage", subset="t1c+t2f", seed=0, cache_dir=cache, splits=splits)
    segmentor = Trainer(tiny_config, RunRequest(model="segmentor", out_dir=tmp_path / "seg", **run))
    assert segmentor.sampler.positive_labels == (1, 3) and segmentor.sampler.positive_centre == "voxel"
    assert segmentor.sampler.negative_centre == "background"
    assert segmentor.sampler.augmenter.scope == "volume"
    assert type(segmentor.sampler.augmenter.transform.transforms[0]).__name__ == "RandAffined"
    batch = segmentor.sampler.batch(0)
    with torch.no_grad():
        main, aux, _ = forward_outputs(segmentor.model, segmentor.runtime.inputs(batch.image))
    target = region_targets(batch.label)
    expected = segmentation_loss(main, aux, target, 0.5, normalise=False, dice="sample").item()
    assert len(aux) == 1  # two heads: weights 1 and 0.5
    assert segmentor.train_step(batch)[0] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(segmentation_loss(main, aux, target, 0.5).item(), rel=1e-3)

    detector = Trainer(tiny_config, RunRequest(model="detector", out_dir=tmp_path / "det", **run))
    assert not detector.sampler.tumour_free_negatives and detector.sampler.negative_centre == "brain"
    assert (detector.ts.target, detector.sampler.positive_labels) == ("label_sum", (1, 2, 3))


def _negative_centres(sampler, n=400):
    rng = np.random.default_rng(1)
    return np.array([sampler._negative_centre(sampler.cases[0], rng) for _ in range(n)])


def test_background_negatives_never_centre_in_the_positive_region(lesion_pair):
    label = np.asarray(_sampler(lesion_pair).cases[0].label)
    image = np.asarray(_sampler(lesion_pair).cases[0].image)
    for region, positive in (("tc_et", (1, 3)), ("wt", (1, 2, 3))):
        centres = _negative_centres(_sampler(lesion_pair, positive_region=region, negative_centre="background"))
        assert not np.isin(label[tuple(centres.T)], positive).any(), region
        assert np.all(np.any(image[:, *centres.T] != 0, axis=0))  # still brain voxels
    # outside TC/ET, edema is a fair negative centre; any brain voxel includes the tumour itself
    background = label[tuple(_negative_centres(_sampler(lesion_pair, positive_region="tc_et",
                                                        negative_centre="background")).T)]
    brain = label[tuple(_negative_centres(_sampler(lesion_pair, positive_region="tc_et")).T)]
    assert (background == 2).any() and np.isin(brain, (1, 3)).any()


def test_background_negatives_fall_back_to_the_exact_set_when_tumour_fills_the_brain(tmp_path, case_writer):
    case_writer(tmp_path, "full", 0, [((18, 18, 14), 16)])  # the core covers the brain but for a thin rim
    s = PatchSampler(tmp_path, ["full"], subset_channels("t1c"), (8, 8, 8), batch_patients=1, crops_per_patient=1,
                     pos_fraction=0.0, task="segmentation", seed=0, positive_region="tc_et",
                     negative_centre="background")
    case = s.cases[0]
    rim = np.any(case.image != 0, axis=0) & ~np.isin(case.label, (1, 3))
    assert 0 < rim.sum() < 0.005 * rim.size  # 32 rejection draws mostly miss it
    centres = _negative_centres(s, 50)
    assert rim[tuple(centres.T)].all()


def test_default_negative_centres_are_unchanged(lesion_pair):
    # the centres the sampler drew before negative_centre existed (same seed, same case)
    centres = _negative_centres(_sampler(lesion_pair), 64)
    assert hashlib.sha256(centres.astype(np.int64).tobytes()).hexdigest() == DEFAULT_NEGATIVE_CENTRES


def _augmentation(**keys):
    return AugmentationSettings.from_section(validate_section("training", {"augmentation": keys})["augmentation"])


_SPATIAL_ONLY = dict(noise_prob=0.0, smooth_prob=0.0, intensity_scale_prob=0.0, low_resolution_prob=0.0,
                     mirror_prob=0.0)


def test_separate_affine_is_the_default_transform_list():
    names = [type(t).__name__ for t in PatchAugmenter(_augmentation()).transform.transforms]
    assert names[:2] == ["RandRotated", "RandZoomd"] and "RandAffined" not in names
    joint = [type(t).__name__ for t in PatchAugmenter(_augmentation(affine="joint")).transform.transforms]
    assert joint[0] == "RandAffined" and not {"RandRotated", "RandZoomd"} & set(joint)
    assert joint[1:] == names[2:]  # the other transforms, in the same order


def test_joint_affine_rotates_and_scales_each_axis_with_one_matrix():
    from monai.transforms import Affine

    augmenter = PatchAugmenter(_augmentation(affine="joint", rotate_prob=1.0, scale_prob=1.0, **_SPATIAL_ONLY))
    grid = np.stack(np.meshgrid(*[np.arange(24)] * 3, indexing="ij")).astype(np.float32)
    label = np.zeros((1, 24, 24, 24), np.float32)
    label[0, 6:18, 8:16, 10:14] = 2
    label[0, 9:14, 10:13, 11:13] = 3
    image = np.concatenate([label, grid[:1] / 24])  # channel 0 is the label itself, interpolated
    augmenter.reseed(5)
    out_image, out_label = augmenter(image, label)
    # one matrix holds both: a rotation (off-diagonal terms) and unequal axis scales (its singular values)
    grid_params = augmenter.transform.transforms[0].rand_affine.rand_affine_grid
    matrix = np.asarray(grid_params.get_transformation_matrix(), dtype=np.float64)
    scales = np.linalg.svd(matrix[:3, :3], compute_uv=False)
    assert np.all((scales >= 0.7 - 1e-6) & (scales <= 1.4 + 1e-6)) and np.ptp(scales) > 0.05
    assert np.abs(matrix[:3, :3] - np.diag(np.diag(matrix[:3, :3]))).max() > 0.1
    # the label moved by that matrix, nearest-neighbour: values stay labels
    expected = Affine(affine=torch.as_tensor(matrix), mode="nearest", padding_mode="zeros",
                      image_only=True)(torch.from_numpy(label))
    assert torch.equal(out_label, torch.as_tensor(expected).as_tensor().float())
    assert set(torch.unique(out_label).tolist()) <= {0.0, 2.0, 3.0}
    assert not torch.equal(out_label, torch.from_numpy(label))
    # the interpolated image channel agrees with the label it was a copy of (same geometry)
    agree = ((out_image[0] > 1.0) == (out_label[0] > 1.0)).float().mean().item()
    assert agree > 0.97


def test_joint_affine_needs_one_probability():
    from brainmets.config import ConfigError, merge_config, read_yaml, validate_config
    from pathlib import Path

    default = read_yaml(Path(__file__).resolve().parents[2] / "config.yaml")
    bad = merge_config(default, {"training": {"augmentation": {"affine": "joint", "scale_prob": 0.3}}})
    with pytest.raises(ConfigError, match="scale_prob is 0.3 with affine: joint"):
        validate_config(bad)


def test_detector_background_negatives_are_centred_outside_the_tumour_and_never_redrawn(lesion_pair):
    from brainmets.training.trainer import negative_crops

    def detection(negatives):
        section = validate_section("training", {"detection": {"negatives": negatives}})
        return training_settings({"training": section}).detection

    assert negative_crops(detection("tumour_free")) == {"tumour_free_negatives": True, "negative_centre": "brain"}
    assert negative_crops(detection("brain")) == {"tumour_free_negatives": False, "negative_centre": "brain"}
    args = negative_crops(detection("background"))
    assert args == {"tumour_free_negatives": False, "negative_centre": "background"}
    s = PatchSampler(lesion_pair, ["pair"], subset_channels("t1c"), (8, 8, 8), batch_patients=1,
                     crops_per_patient=1, pos_fraction=0.0, task="detection", seed=0, **args)
    rng = np.random.default_rng(1)
    case = s.cases[0]
    centres = [s._negative_centre(case, rng) for _ in range(200)]
    assert not any(case.label[tuple(c)] > 0 for c in centres)  # the detector's region is WT
    crops = [crop_slices(case.label.shape, c, s.patch)[0] for c in centres]
    assert sum(bool(np.any(case.label[c] > 0)) for c in crops) > 0  # a crop near a lesion keeps its tumour
