"""The MNI152 2009 anatomy every synthetic patient is built from, loaded once per process.

nilearn ships the ICBM 2009 (symmetric, non-linear) T1 template and its grey
and white matter probability maps inside its wheel, so no download is needed.
The three 1 mm volumes are packed into one ``uint32`` array (one byte per map:
grey matter, white matter, brain mask, unused) so that a single gather fetches
every map of a voxel when a patient's deformed anatomy is sampled
(:func:`sample_template`).

The brain mask is the T1 template above 0.2 of its range, the threshold nilearn's
own ``load_mni152_brain_mask`` uses. Cerebrospinal fluid (ventricles and sulci)
is what the mask holds beyond grey and white matter; it is derived per voxel
after sampling, not stored.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainmets.boxes import bounding_box
from brainmets.errors import BrainmetsError

#: File names inside ``nilearn/datasets/data``.
TEMPLATE_FILES: dict[str, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
#: Brain = T1 template above this fraction of its range (nilearn's own threshold).
BRAIN_THRESHOLD = 0.2
#: Byte (channel) of each map in the packed template, in the order ``sample_template`` returns.
CHANNELS: tuple[str, ...] = ("gm", "wm", "brain")
#: Zero voxels added on every side, so that coordinates clamped to the array edge read "outside".
_PAD = 1


@dataclass(frozen=True)
class Template:
    """Packed template maps on their 1 mm RAS grid (voxel axes +x Right, +y Anterior, +z Superior).

    ``packed`` is C-ordered ``uint32`` with a zero border of one voxel; byte ``c``
    of every element is channel ``CHANNELS[c]`` scaled to 0..255.
    ``brain_centre`` is the centre of the brain's bounding box in (padded)
    voxel coordinates: the point that lands in the middle of a patient's field of view.
    """

    packed: np.ndarray
    brain_centre: np.ndarray
    brain_extent_mm: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.packed.shape  # type: ignore[return-value]


def template_dir() -> Path:
    """Folder of nilearn's packaged data files (found without importing nilearn, which is slow)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise BrainmetsError(
            "the synthetic cohort needs nilearn (it ships the MNI152 2009 template); "
            "install it with `pip install nilearn`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _load_map(name: str) -> np.ndarray:
    import nibabel as nib

    path = template_dir() / TEMPLATE_FILES[name]
    if not path.is_file():
        raise BrainmetsError(
            f"MNI152 2009 {name} map not found at {path}; this nilearn version does not ship it "
            "(nilearn >= 0.10 does)"
        )
    image = nib.load(path)
    if not np.allclose(np.abs(np.diag(image.affine)[:3]), 1.0):
        raise BrainmetsError(f"{path}: expected a 1 mm template, got affine diagonal {np.diag(image.affine)[:3]}")
    return np.asarray(image.dataobj, dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=4)
def load_template(spacing: float = 1.0) -> Template:
    """The packed template, smoothed for sampling at ``spacing`` mm; cached per process.

    Sampling a 1 mm map at a coarser spacing with linear interpolation would
    alias (thin cortex appearing and vanishing between slices), so for
    ``spacing > 1`` the maps are first blurred with a Gaussian of
    ``0.45 * sqrt(spacing**2 - 1)`` mm, about what averaging over the larger
    voxel does.
    """
    maps = {name: _load_map(name) for name in TEMPLATE_FILES}
    brain = (maps["t1"] > BRAIN_THRESHOLD).astype(np.float32)
    channels = [maps["gm"], maps["wm"], brain]
    if spacing > 1.0:
        from scipy.ndimage import gaussian_filter

        sigma = 0.45 * float(np.sqrt(spacing**2 - 1.0))
        channels = [gaussian_filter(c, sigma, truncate=3.0) for c in channels]

    shape = tuple(s + 2 * _PAD for s in brain.shape)
    packed_bytes = np.zeros((*shape, 4), dtype=np.uint8)
    inner = tuple(slice(_PAD, _PAD + s) for s in brain.shape)
    for c, values in enumerate(channels):
        packed_bytes[inner + (c,)] = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    packed = packed_bytes.view(np.uint32)[..., 0]

    box = bounding_box(brain > 0.5)
    if box is None:
        raise BrainmetsError(f"the MNI152 T1 map in {template_dir()} has no voxel above the brain threshold")
    low = np.array([s.start for s in box])
    high = np.array([s.stop - 1 for s in box])
    return Template(
        packed=np.ascontiguousarray(packed),
        brain_centre=(low + high) / 2.0 + _PAD,
        brain_extent_mm=(high - low + 1).astype(np.float64),
    )


#: Points handled per block in :func:`sample_template`: small enough that the
#: temporaries stay in cache, which makes the many elementwise passes ~2x faster.
_BLOCK = 1 << 15


def sample_template(template: Template, coords: np.ndarray) -> np.ndarray:
    """Trilinear samples of the packed maps at template voxel ``coords`` (3, N).

    Returns float32 (N, 3): grey matter, white matter and brain-mask fractions
    in 0..1. Points outside the template read 0.

    All three maps come from one 32-bit gather per cube corner, and points are
    processed in cache-sized blocks; faster than three
    ``scipy.ndimage.map_coordinates`` calls (benchmarks/results/synth.md).
    """
    out = np.empty((coords.shape[1], 3), dtype=np.float32)
    upper = np.array(template.shape, dtype=np.float32)[:, None] - np.float32(1.001)
    flat = template.packed.reshape(-1)
    dims = template.shape
    stride_y, stride_x = dims[2], dims[1] * dims[2]
    corners = [0, 1, stride_y, stride_y + 1, stride_x, stride_x + 1, stride_x + stride_y, stride_x + stride_y + 1]

    for start in range(0, coords.shape[1], _BLOCK):
        block = np.clip(coords[:, start : start + _BLOCK], 0.0, upper)
        base = block.astype(np.int64)  # == floor, coordinates are >= 0
        frac = block - base
        origin = base[0] * stride_x + base[1] * stride_y + base[2]
        # bytes of the gathered words (minus the unused fourth channel) as float
        values = [flat[origin + offset].view(np.uint8).reshape(-1, 4)[:, :3].astype(np.float32) for offset in corners]
        for weight, pairs in ((frac[2], 4), (frac[1], 2), (frac[0], 1)):
            weight = weight[:, None]
            for p in range(pairs):  # lerp(a, b) = a + (b - a) * w, in place in b
                low, high = values[2 * p], values[2 * p + 1]
                high -= low
                high *= weight
                high += low
                values[p] = high
        out[start : start + _BLOCK] = values[0]
    out *= np.float32(1.0 / 255.0)
    return out
