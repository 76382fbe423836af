import hashlib

import numpy as np
import pytest
import torch

from brainmets.config import validate_section
from brainmets.constants import subset_channels
from brainmets.training.augment import PatchAugmenter
from brainmets.training.losses import detection_targets
from brainmets.training.sampling import BatchPrefetcher, PatchSampler, crop_slices
from brainmets.training.settings import AugmentationSettings


SHAPE = (36, 36, 28)  # the tiny cases' shape (conftest.py)
TRAIN = ["case-000", "case-001", "case-002", "case-003"]

#: nnU-Net's augmentations: the schema's defaults
PAPER_AUGMENTATION = AugmentationSettings.from_section(validate_section("training")["augmentation"])


#: the authors' joint rotation and per-axis scaling (configs/paper.yaml)
JOINT_AFFINE = AugmentationSettings.from_section(
    validate_section("training", {"augmentation": {"affine": "joint"}})["augmentation"])


def sampler(cache, task="segmentation", pos_fraction=2 / 3, patch=(16, 16, 16), cases=TRAIN, augment=False,
            crops=5, seed=0, augmentation=PAPER_AUGMENTATION):
    return PatchSampler(cache, cases, subset_channels("t1c+t2f"), patch, batch_patients=2, crops_per_patient=crops,
                        pos_fraction=pos_fraction, task=task, seed=seed,
                        augmenter=PatchAugmenter(augmentation) if augment else None)


def test_positive_share_and_centres(tiny_data):
    cache, _ = tiny_data
    s = sampler(cache, cases=["case-000", "case-001", "case-003"])  # every case has tumour
    for t in range(5):
        b = s.batch(t)
        assert b.image.shape == (10, 2, 16, 16, 16) and b.label.shape == (10, 1, 16, 16, 16)
        assert int(b.positive.sum()) == 7  # round(2/3 * 10)
        # a positive crop is centred on a tumour voxel (shifted inside the volume at borders, never lost)
        assert all(b.label[i].max() > 0 for i in range(10) if b.positive[i])


def test_case_without_tumour_gives_negatives(tiny_data):
    cache, _ = tiny_data
    b = sampler(cache, cases=["case-002"], pos_fraction=1.0).batch(0)
    assert not b.positive.any() and b.label.max() == 0


def test_detector_negatives_avoid_tumour_and_labels_follow_content(tmp_path, case_writer):
    # a large volume with one small lesion: tumour-free negatives exist and must be found
    case_writer(tmp_path, "big", 0, [((18, 18, 14), 2)])
    s = sampler(tmp_path, task="detection", pos_fraction=0.5, patch=(8, 8, 8), cases=["big"])
    for t in range(4):
        b = s.batch(t)
        assert int(b.positive.sum()) == 5
        labels = detection_targets(b.label).flatten()
        assert torch.equal(labels, b.positive.float())


@pytest.mark.parametrize("augmentation", [PAPER_AUGMENTATION, JOINT_AFFINE], ids=["separate", "joint"])
def test_batch_is_a_function_of_seed_and_iteration(tiny_data, augmentation):
    cache, _ = tiny_data
    a, b = (sampler(cache, augment=True, augmentation=augmentation) for _ in range(2))
    later = a.batch(3)
    a.batch(0)
    again = b.batch(3)  # another instance, other history: same batch (what makes a resumed run bitwise equal)
    assert torch.equal(later.image, again.image) and torch.equal(later.label, again.label)
    assert not torch.equal(a.batch(4).image, later.image)
    assert not torch.equal(sampler(cache, augment=True, seed=1, augmentation=augmentation).batch(3).image, later.image)


def test_augmentation_keeps_labels_integral_and_shapes(tiny_data):
    cache, _ = tiny_data
    b = sampler(cache, augment=True).batch(1)
    assert b.image.dtype == torch.float32 and b.image.shape == (10, 2, 16, 16, 16)
    assert set(torch.unique(b.label).tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_small_volume_is_padded(tiny_data):
    cache, _ = tiny_data
    s = sampler(cache, patch=(48, 48, 32))  # larger than the 36x36x28 volume on every axis
    b = s.batch(0)
    assert b.image.shape[2:] == (48, 48, 32)
    image, _, _ = s._draw(s.cases[0], True, np.random.default_rng(0))
    assert np.all(image[:, :6] == 0) and np.all(image[:, -6:] == 0)  # (48 - 36) / 2 on each side
    slices, pads = crop_slices(SHAPE, (0, 35, 14), (16, 16, 32))
    assert slices[:2] == (slice(0, 16), slice(20, 36)) and pads == [(0, 0), (0, 0), (2, 2)]


def test_fixed_validation_patches_are_reproducible(tiny_data):
    cache, _ = tiny_data
    one = sampler(cache).fixed_patches(3)
    two = sampler(cache).fixed_patches(3)
    assert one.image.shape[0] == 12 and torch.equal(one.image, two.image)


def test_prefetcher_yields_in_order_and_reraises():
    def make(t):
        if t == 3:
            raise ValueError("boom at 3")
        return t

    fetch = BatchPrefetcher(make, 1, 5, depth=2)
    assert [next(fetch), next(fetch)] == [1, 2]
    with pytest.raises(ValueError, match="boom at 3"):
        next(fetch)
    fetch.close()
    assert list(BatchPrefetcher(lambda t: t * 2, 0, 3, depth=0)) == [0, 2, 4]


def _volume_case(case_writer, cache, name, seed, value):
    """A tiny case whose image is ``value`` everywhere (anatomy to the volume's edges), one lesion."""
    case_writer(cache, name, seed, [((18, 18, 14), 3)])
    array = np.load(cache / f"{name}.npy")
    array[:4] = value
    np.save(cache / f"{name}.npy", array)


def _only(**probs):
    off = dict(rotate_prob=0.0, scale_prob=0.0, noise_prob=0.0, smooth_prob=0.0, intensity_scale_prob=0.0,
               low_resolution_prob=0.0, mirror_prob=0.0)
    section = validate_section("training", {"augmentation": off | probs})
    return AugmentationSettings.from_section(section["augmentation"])


def _constant_sampler(cache, augmentation):
    return PatchSampler(cache, ["a", "b"], subset_channels("t1c+t2f"), (8, 8, 8), batch_patients=2,
                        crops_per_patient=5, pos_fraction=0.4, task="segmentation", seed=0,
                        augmenter=PatchAugmenter(augmentation))


def test_volume_scope_crops_of_one_patient_share_one_draw(tmp_path, case_writer):
    for name, seed in (("a", 0), ("b", 1)):
        _volume_case(case_writer, tmp_path, name, seed, 1.0)
    wide = dict(intensity_scale_prob=1.0, intensity_scale_range=[0.5, 1.5])
    for t in range(3):
        shared = _constant_sampler(tmp_path, _only(scope="volume", **wide)).batch(t).image
        values = shared.reshape(2, 5, -1)  # patient-major: the crops of a patient are consecutive
        assert torch.all(values == values[:, :1, :1])  # one factor for every voxel of a patient's 5 crops
        assert values[0, 0, 0] != values[1, 0, 0]  # another patient, another draw
        alone = _constant_sampler(tmp_path, _only(**wide)).batch(t).image.reshape(2, 5, -1)
        assert len(torch.unique(alone[:, :, 0])) == 10  # the default: a factor per crop


def test_volume_scope_rotated_crops_hold_anatomy_to_their_corners(tmp_path, case_writer):
    for name, seed in (("a", 0), ("b", 1)):
        _volume_case(case_writer, tmp_path, name, seed, 1.0)
    rotate = dict(rotate_prob=1.0)
    zero_crops = {}
    for scope in ("crop", "volume"):
        images = torch.cat([_constant_sampler(tmp_path, _only(scope=scope, **rotate)).batch(t).image
                            for t in range(4)])
        zero_crops[scope] = sum(bool((crop == 0).any()) for crop in images)
    # a crop rotated alone is padded with zeros at its corners; one cut from a rotated volume only near
    # the volume's rotated-away edges
    assert zero_crops["crop"] >= 30 and 3 * zero_crops["volume"] <= zero_crops["crop"], zero_crops


def test_volume_scope_batch_is_a_function_of_seed_and_iteration(tiny_data):
    cache, _ = tiny_data
    volume = AugmentationSettings.from_section(
        validate_section("training", {"augmentation": {"affine": "joint", "scope": "volume"}})["augmentation"])
    a, b = (sampler(cache, augment=True, augmentation=volume) for _ in range(2))
    later = a.batch(3)
    a.batch(0)
    again = b.batch(3)
    assert torch.equal(later.image, again.image) and torch.equal(later.label, again.label)
    assert set(torch.unique(later.label).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert not torch.equal(sampler(cache, augment=True, seed=1, augmentation=volume).batch(3).image, later.image)


#: sha256 of three un-augmented batches per task (seed 7) drawn by the sampler before negative_centre and
#: scope existed: with the defaults the crops stay the same, voxel for voxel
DEFAULT_BATCHES = "5120c06d23640ac40b4a881f13bdbaa4029c32f7139f27e29c451dff7f2a5ec4"


def test_default_keys_draw_the_same_crops_as_before(tmp_path, case_writer):
    specs = {"case-000": [((12, 12, 10), 3), ((24, 22, 16), 2)], "case-001": [((18, 18, 14), 4)], "case-002": []}
    for i, (name, lesions) in enumerate(specs.items()):
        case_writer(tmp_path, name, i, lesions)
    digest = hashlib.sha256()
    for task, pos in (("segmentation", 2 / 3), ("detection", 0.5)):
        s = sampler(tmp_path, task=task, pos_fraction=pos, cases=list(specs), seed=7)
        for t in range(3):
            b = s.batch(t)
            for x in (b.image, b.label, b.positive):
                digest.update(x.numpy().tobytes())
    assert digest.hexdigest() == DEFAULT_BATCHES
