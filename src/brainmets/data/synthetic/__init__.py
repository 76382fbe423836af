"""Synthetic BraTS-MET 2023 cohort: the pipeline's embedded default data.

Real anatomy (the MNI152 2009 template and its grey/white matter maps, shipped
inside nilearn) is warped per patient, given sequence-specific contrast, a bias
field and noise, and seeded with metastases at the grey-white junction (enhancing
rim, necrotic core in larger ones, edema proportional to size). Files follow the
BraTS-MET layout exactly, so every later stage runs on it unchanged.

Modules: :mod:`.template` (the anatomy, loaded once per process),
:mod:`.geometry` (BraTS grid and affine, per-patient warp), :mod:`.anatomy`
(tissue fractions on the grid), :mod:`.lesions`, :mod:`.contrast` (sequence
intensities, bias, noise) and :mod:`.cohort` (cases, files, parallel generation).
"""

from brainmets.data.synthetic.cohort import (
    CASE_FILES,
    SyntheticCase,
    case_id,
    case_paths,
    generate_case,
    synthesize_cohort,
    write_case,
)
from brainmets.data.synthetic.geometry import BRATS_SHAPE, BRATS_SPACING, brats_affine
from brainmets.data.synthetic.lesions import Lesion

__all__ = [
    "BRATS_SHAPE",
    "BRATS_SPACING",
    "CASE_FILES",
    "Lesion",
    "SyntheticCase",
    "brats_affine",
    "case_id",
    "case_paths",
    "generate_case",
    "synthesize_cohort",
    "write_case",
]
