"""What each MRI sequence shows: tissue and lesion intensities, bias field and noise.

Relative intensities (white matter of T1 = 1) of normal tissue and of the three
lesion compartments, per BraTS-MET sequence:

=========  =====  =====  =====  =====  =====  =====
sequence    CSF    GM     WM    NETC    ET    SNFH
=========  =====  =====  =====  =====  =====  =====
t1n (T1)   0.30   0.72   1.00   0.35   0.72   0.78
t1c (T1c)  0.30   0.72   1.00   0.35   1.60   0.76
t2w (T2)   1.00   0.55   0.40   0.90   0.60   0.80
t2f (FLAIR)0.12   0.62   0.45   0.50   0.70   1.00
=========  =====  =====  =====  =====  =====  =====

So enhancing tumour stands out only on T1c (on T1 it is about as bright as
cortex), necrosis is dark on T1/T1c and bright on T2, and edema is bright on
T2 and FLAIR and slightly dark on T1: T1c carries ET and the tumour core,
FLAIR and T2 the edema, T1 alone little. Edema keeps a quarter of the
underlying tissue's signal, so white-matter structure shows through it.

Per patient every entry is scaled by an independent factor in
``1 +- JITTER`` (small enough that the orderings above always hold), each
sequence gets its own overall scale (scanner gain), one smooth multiplicative
bias field (the receive coil's) is shared by the four sequences with a
sequence-specific strength, and Gaussian noise of 2-4 % of the white-matter
signal is added (at this SNR Rician noise is Gaussian to a good approximation).
Images are stored as int16, brain voxels at least 1, so the brain mask is
exactly the non-zero voxels, as in skull-stripped BraTS releases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainmets.constants import MODALITIES

COMPARTMENTS: tuple[str, ...] = ("csf", "gm", "wm", "netc", "et", "snfh")
#: Relative intensity of each compartment (columns in ``COMPARTMENTS`` order) per sequence.
RELATIVE_INTENSITY: dict[str, tuple[float, ...]] = {
    "t1n": (0.30, 0.72, 1.00, 0.35, 0.72, 0.78),
    "t1c": (0.30, 0.72, 1.00, 0.35, 1.60, 0.76),
    "t2w": (1.00, 0.55, 0.40, 0.90, 0.60, 0.80),
    "t2f": (0.12, 0.62, 0.45, 0.50, 0.70, 1.00),
}
#: Per-patient multiplicative jitter of each entry: factor drawn in [1 - JITTER, 1 + JITTER].
JITTER = 0.07
#: Fraction of the tissue signal edema keeps.
EDEMA_TISSUE_WEIGHT = 0.25
#: Range of the scale of one sequence (stored value of relative intensity 1).
GAIN_RANGE = (400.0, 1600.0)
#: Noise standard deviation relative to the sequence's white-matter signal.
NOISE_RANGE = (0.02, 0.04)
#: RMS of the log bias field (shared by the sequences), and per-sequence strength range.
BIAS_RMS_RANGE = (0.04, 0.10)
BIAS_STRENGTH_RANGE = (0.6, 1.4)


@dataclass
class SequenceContrast:
    """One patient's drawn contrast for one sequence."""

    intensity: dict[str, float]  # relative, jittered
    gain: float
    noise: float  # standard deviation, in stored units
    bias_strength: float


def draw_contrast(rng: np.random.Generator) -> dict[str, SequenceContrast]:
    """Draw the four sequences' contrast for one patient."""
    contrast = {}
    for sequence in MODALITIES:
        jitter = rng.uniform(1.0 - JITTER, 1.0 + JITTER, size=len(COMPARTMENTS))
        intensity = {name: float(value * j) for name, value, j in zip(COMPARTMENTS, RELATIVE_INTENSITY[sequence], jitter)}
        gain = float(np.exp(rng.uniform(*np.log(GAIN_RANGE))))
        noise = float(rng.uniform(*NOISE_RANGE)) * intensity["wm"] * gain
        contrast[sequence] = SequenceContrast(
            intensity=intensity, gain=gain, noise=noise, bias_strength=float(rng.uniform(*BIAS_STRENGTH_RANGE))
        )
    return contrast


def compose_sequence(
    contrast: SequenceContrast,
    fractions: np.ndarray,
    lesion_voxels: np.ndarray,
    lesion_fractions: np.ndarray,
    log_bias: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Stored int16 values of the brain voxels for one sequence.

    ``fractions`` (N, 3): grey matter, white matter, CSF of each brain voxel;
    ``lesion_voxels``: positions (into the N brain voxels) touched by a lesion,
    with ``lesion_fractions`` (M, 3): their WT, TC and NETC fractions;
    ``log_bias`` (N,): the shared log bias field.
    """
    mu = contrast.intensity
    values = fractions @ np.array([mu["gm"], mu["wm"], mu["csf"]], dtype=np.float32)

    if len(lesion_voxels):
        tissue = values[lesion_voxels]
        wt, tc, netc = lesion_fractions[:, 0], lesion_fractions[:, 1], lesion_fractions[:, 2]
        edema = EDEMA_TISSUE_WEIGHT * tissue + (1.0 - EDEMA_TISSUE_WEIGHT) * mu["snfh"]
        # nested partial volumes: tissue | edema (wt - tc) | enhancing (tc - netc) | necrosis (netc)
        values[lesion_voxels] = (
            (1.0 - wt) * tissue + (wt - tc) * edema + (tc - netc) * mu["et"] + netc * mu["netc"]
        ).astype(np.float32)

    values *= np.exp(np.float32(contrast.bias_strength) * log_bias)
    values *= np.float32(contrast.gain)
    values += rng.standard_normal(len(values), dtype=np.float32) * np.float32(contrast.noise)
    np.clip(values, 1.0, np.iinfo(np.int16).max, out=values)
    return np.rint(values).astype(np.int16)
