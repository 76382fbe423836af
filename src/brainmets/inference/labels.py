"""Region probabilities (WT, TC, ET) -> BraTS-MET labels (0 background, 1 NETC, 2 SNFH, 3 ET).

Networks predict the three nested regions of :data:`brainmets.constants.TRAIN_REGIONS`
as independent sigmoid channels, which may contradict each other (ET without
TC, TC outside WT). Two rules (``inference.label_export``). ``nested``
(default) keeps a label map consistent with the nesting WT ⊇ TC ⊇ ET:

* WT  = p_WT > threshold
* TC  = p_TC > threshold **and** WT        (a core only inside the tumour)
* ET  = p_ET > threshold **and** TC        (enhancement only inside the core)
* label = 3 on ET, 1 on TC minus ET, 2 on WT minus TC, 0 elsewhere.

Intersection (rather than the union nnU-Net's region export implies) is the
conservative choice: a voxel the WT channel calls background stays background
whatever the inner channels say, which avoids isolated false-positive ET specks.

``union`` is the authors' export: label 3 wherever the ET channel fires, else 1
where the TC channel fires, else 2 where WT fires, so each inner channel also
enlarges the regions around it (WT is then WT ∪ TC ∪ ET).
"""

from __future__ import annotations

import numpy as np

from brainmets.constants import TRAIN_REGIONS
from brainmets.errors import BrainmetsError


def regions_to_labels(probabilities: np.ndarray, threshold: float = 0.5, rule: str = "nested") -> np.ndarray:
    """BraTS labels (uint8, shape ``probabilities.shape[1:]``) from ``(3, ...)`` WT/TC/ET probabilities."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim < 1 or probabilities.shape[0] != len(TRAIN_REGIONS):
        raise BrainmetsError(
            f"expected {len(TRAIN_REGIONS)} region channels ({', '.join(TRAIN_REGIONS)}) first, "
            f"got an array of shape {probabilities.shape}"
        )
    whole = probabilities[TRAIN_REGIONS.index("WT")] > threshold
    core = probabilities[TRAIN_REGIONS.index("TC")] > threshold
    enhancing = probabilities[TRAIN_REGIONS.index("ET")] > threshold
    if rule == "nested":
        core &= whole
        enhancing &= core
    labels = np.zeros(whole.shape, dtype=np.uint8)
    labels[whole] = 2
    labels[core] = 1
    labels[enhancing] = 3
    return labels
