"""Patch augmentation with MONAI dictionary transforms (nnU-Net's set, the paper's list).

Rotation, isotropic scaling, Gaussian noise, Gaussian smoothing,
multiplicative intensity scaling, simulated low resolution and mirroring, each
with its own probability (``training.augmentation`` of the config schema); the
authors' code adds contrast scaling about the mean and gamma contrast (plain and
inverted), off unless their probabilities are set. With ``affine: joint``
rotation and scaling are one MONAI ``RandAffined`` instead (the authors'):
one draw decides both, and each axis gets its own scale factor. Spatial
transforms move the label with the image (nearest-neighbour for the label). A
transform whose probability is 0 is not built at all, so it draws nothing from
the random state. ``scope`` says what is augmented: each crop (``crop``) or
the patient's whole volume before its crops are cut (``volume``, the
authors'; the sampler does the cutting, :mod:`brainmets.training.sampling`).

Determinism: the sampler calls :meth:`PatchAugmenter.reseed` with a seed
derived from (run seed, iteration) before augmenting a batch's patches in slot
order, so a batch's augmentation does not depend on what was augmented before
it. That is what makes an interrupted-and-resumed run identical to an
uninterrupted one without saving the transforms' random states. (Re-seeding
once per batch rather than per patch: MONAI's ``set_random_state`` walks every
transform, ~6 ms a call.)

Where: patches are augmented on ``device`` (the training device). On a GPU
that makes the resampling and smoothing nearly free; on a CPU it is the only
choice anyway. MONAI's Gaussian smoothing is the costly transform on CPU
(~0.2-0.4 s for 2 x 64^3, a separable convolution through oneDNN); the
benchmark (benchmarks/bench_training.py) reports what the loop waits for data.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from brainmets.training.settings import AugmentationSettings


def _plain_tensor(x) -> torch.Tensor:
    """MONAI returns MetaTensors; the loop wants plain tensors (no metadata tracking cost)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class PatchAugmenter:
    """Random augmentation of one ``(C, *patch)`` image and its ``(1, *patch)`` label."""

    def __init__(self, settings: AugmentationSettings, device: str | torch.device = "cpu"):
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandAffined,
            RandFlipd,
            RandGaussianNoised,
            RandGaussianSmoothd,
            RandRotated,
            RandScaleIntensityd,
            RandScaleIntensityFixedMeand,
            RandSimulateLowResolutiond,
            RandZoomd,
        )

        s = settings
        both, img = ["image", "label"], ["image"]
        angle = math.radians(s.rotate_degrees)
        transforms = []
        if s.affine == "joint":
            if s.rotate_prob > 0:
                # MONAI scales the sampling grid by 1 + f, f drawn per axis
                transforms.append(RandAffined(both, prob=s.rotate_prob, rotate_range=(angle, angle, angle),
                                              scale_range=((s.scale_range[0] - 1.0, s.scale_range[1] - 1.0),) * 3,
                                              mode=("bilinear", "nearest"), padding_mode="zeros",
                                              device=torch.device(device)))
        elif s.rotate_prob > 0:
            transforms.append(RandRotated(both, range_x=angle, range_y=angle, range_z=angle, prob=s.rotate_prob,
                                          mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True))
        if s.affine == "separate" and s.scale_prob > 0:
            # One zoom factor for all three axes (isotropic), as nnU-Net does by default.
            transforms.append(RandZoomd(both, prob=s.scale_prob, min_zoom=s.scale_range[0], max_zoom=s.scale_range[1],
                                        mode=("trilinear", "nearest"), padding_mode="constant", keep_size=True))
        if s.noise_prob > 0:
            transforms.append(RandGaussianNoised(img, prob=s.noise_prob, mean=0.0, std=s.noise_std))
        if s.smooth_prob > 0:
            transforms.append(RandGaussianSmoothd(img, sigma_x=s.smooth_sigma, sigma_y=s.smooth_sigma,
                                                  sigma_z=s.smooth_sigma, prob=s.smooth_prob))
        if s.intensity_scale_prob > 0:
            lo, hi = s.intensity_scale_range
            # MONAI multiplies by (1 + f) with f ~ U(lo - 1, hi - 1).
            transforms.append(RandScaleIntensityd(img, factors=(lo - 1.0, hi - 1.0), prob=s.intensity_scale_prob,
                                                  channel_wise=s.intensity_scale_channel_wise))
        if s.fixed_mean_scale_prob > 0:
            lo, hi = s.intensity_scale_range
            transforms.append(RandScaleIntensityFixedMeand(img, factors=(lo - 1.0, hi - 1.0), fixed_mean=True,
                                                           preserve_range=True, prob=s.fixed_mean_scale_prob))
        if s.low_resolution_prob > 0:
            transforms.append(RandSimulateLowResolutiond(img, prob=s.low_resolution_prob,
                                                         zoom_range=s.low_resolution_zoom))
        for prob, inverted in ((s.gamma_inverted_prob, True), (s.gamma_prob, False)):
            if prob > 0:
                transforms.append(RandAdjustContrastd(img, gamma=tuple(s.gamma_range), invert_image=inverted,
                                                      retain_stats=True, prob=prob))
        if s.mirror_prob > 0:
            transforms.extend(RandFlipd(both, prob=s.mirror_prob, spatial_axis=axis) for axis in range(3))
        self.enabled = bool(s.enabled and transforms)
        self.scope = s.scope
        self.transform = Compose(transforms) if self.enabled else None
        self.device = torch.device(device)

    def reseed(self, seed: int) -> None:
        """Fix every transform's random state: the patches augmented next follow from ``seed`` alone."""
        if self.enabled:
            self.transform.set_random_state(seed=int(seed) % (2**32))

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented ``(image, label)`` as float32 tensors on the augmenter's device."""
        image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        label_t = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32)).to(self.device)
        if not self.enabled:
            return image_t, label_t
        out = self.transform({"image": image_t, "label": label_t})
        return _plain_tensor(out["image"]).to(torch.float32), _plain_tensor(out["label"]).to(torch.float32)
