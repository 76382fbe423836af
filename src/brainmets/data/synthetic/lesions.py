"""Metastases: how many, how big, where, and their labels and partial-volume fractions.

The model follows what brain metastases look like on BraTS-MET:

* **Count** per patient is skewed: ``1 + NegativeBinomial(0.6, 0.25)``, capped at
  :data:`MAX_LESIONS`; about 43 % of patients have one metastasis, 75 % at most
  three, 12 % more than five and 2 % more than ten.
* **Size**: tumour radius log-normal (median 4.5 mm, sigma 0.7) within
  1.5-20 mm. Larger lesions get placed first, as they need the most room.
* **Site**: haematogenous metastases lodge at the grey-white junction, so the
  centre is drawn among points where both grey and white matter are present
  (weight ``gm * wm``), deep enough that the tumour and a thin rim of edema fit
  inside the brain, and far enough from earlier lesions that the two do not
  merge (each lesion is one 26-connected component of the label map).
* **Structure** (BraTS labels): an enhancing rim (ET, 3) around a necrotic core
  (NETC, 1) in lesions above ~4 mm (more likely the larger they are), and
  peritumoral edema (SNFH, 2) around the tumour, whose reach is proportional to
  the tumour radius and extends further into white matter than into cortex, as
  vasogenic edema does. Surfaces are lobulated by a low-order angular
  modulation of the radius.

The nesting that evaluation relies on holds for every voxel of every lesion:
the necrotic core stays at least :data:`MIN_SHELL_VOXELS` voxels inside the
enhancing surface and the edema at least as far outside it, so each NETC
voxel's 26 neighbours are tumour and each tumour voxel's neighbours inside the
brain are tumour or edema (WT is a superset of TC, TC of NETC). A final
one-voxel dilation check guards the rare voxel a strongly lobulated surface
would otherwise leave uncovered, and edema islands cut off from their tumour
are removed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from brainmets.data.synthetic.anatomy import Anatomy

NETC, SNFH, ET = 1, 2, 3
MAX_LESIONS = 25
RADIUS_MM_RANGE = (1.5, 20.0)
#: Minimum thickness (voxels) of the enhancing rim around a necrotic core and of
#: the edema around the tumour, so the labels nest on the voxel grid.
MIN_SHELL_VOXELS = 2.0
MIN_SHELL_MM = 1.5
#: Largest edema margin (mm) beyond the tumour surface.
MAX_EDEMA_MM = 30.0
#: Bounds of the radial shape modulation (fraction of the mean radius).
_SHAPE_RANGE = (0.8, 1.2)


@dataclass
class Lesion:
    """One metastasis, in the patient's voxel grid and in millimetres.

    ``radius_mm``: mean radius of the tumour (ET + NETC); ``necrosis_fraction``:
    radius of the necrotic core relative to it (0 when solid); ``edema_mm``:
    how far the edema reaches beyond the tumour surface in white matter (less
    in grey matter). ``shape``/``necrosis_shape``/``edema_shape`` are the
    angular modulations (3 linear + 6 quadratic coefficients each).
    """

    centre: tuple[int, int, int]
    radius_mm: float
    necrosis_fraction: float
    edema_mm: float
    shape: tuple[float, ...] = field(repr=False)
    necrosis_shape: tuple[float, ...] = field(repr=False)
    edema_shape: tuple[float, ...] = field(repr=False)

    @property
    def has_necrosis(self) -> bool:
        return self.necrosis_fraction > 0.0

    def summary(self) -> dict:
        """Plain-JSON description without the shape coefficients."""
        info = asdict(self)
        for key in ("shape", "necrosis_shape", "edema_shape"):
            info.pop(key)
        info["centre"] = [int(c) for c in self.centre]
        return info


def draw_lesion_count(rng: np.random.Generator) -> int:
    """Number of metastases of one patient (skewed: most 1-3, a tail past 10)."""
    return int(min(1 + rng.negative_binomial(0.6, 0.25), MAX_LESIONS))


def draw_radius_mm(rng: np.random.Generator) -> float:
    low, high = RADIUS_MM_RANGE
    return float(np.clip(np.exp(rng.normal(np.log(4.5), 0.7)), low, high))


def _random_shape(rng: np.random.Generator, amplitude: float) -> tuple[float, ...]:
    """Coefficients of ``1 + a.u + u'Bu`` (a: 3 values, B symmetric traceless: 6 values)."""
    linear = rng.normal(0.0, amplitude, size=3)
    quad = rng.normal(0.0, amplitude, size=6)
    quad[:3] -= quad[:3].mean()
    return tuple(float(x) for x in np.concatenate([linear, quad]))


def _modulation(coefficients: tuple[float, ...], unit: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """``1 + a.u + u'Bu`` at unit directions ``unit``, clipped to :data:`_SHAPE_RANGE`."""
    a0, a1, a2, b00, b11, b22, b01, b02, b12 = coefficients
    x, y, z = unit
    value = 1.0 + a0 * x + a1 * y + a2 * z + b00 * x * x + b11 * y * y + b22 * z * z
    value += 2.0 * (b01 * x * y + b02 * x * z + b12 * y * z)
    return np.clip(value, *_SHAPE_RANGE)


def place_lesions(rng: np.random.Generator, anatomy: Anatomy, spacing: float) -> list[Lesion]:
    """Draw count, sizes and sites of one patient's metastases.

    A lesion for which no site is deep enough is shrunk to the deepest one; a
    lesion that cannot fit at all (tiny or very crowded brains) is dropped, so
    ``len(result)`` can be below the drawn count.
    """
    coarse = anatomy.coarse
    shell = max(MIN_SHELL_MM, MIN_SHELL_VOXELS * spacing)
    slack = coarse.stride * spacing  # depth is known on the coarse grid only

    points = np.argwhere(coarse.brain)
    voxels = np.stack([coarse.axes[a][points[:, a]] for a in range(3)], axis=1)
    depth = coarse.depth_mm[tuple(points.T)]
    gm = coarse.gm[tuple(points.T)]
    wm = coarse.wm[tuple(points.T)]
    junction = np.where((gm > 0.15) & (wm > 0.15), gm * wm, 0.0)

    count = draw_lesion_count(rng)
    radii = sorted((draw_radius_mm(rng) for _ in range(count)), reverse=True)
    lesions: list[Lesion] = []
    reach: list[float] = []  # radius + edema of each placed lesion
    for radius in radii:
        # Larger metastases are more often necrotic; the rim must stay MIN_SHELL thick.
        necrosis = 0.0
        if radius > 4.0 and rng.random() < min(0.9, (radius - 3.0) / 8.0):
            necrosis = float(rng.uniform(0.35, 0.7))
            necrosis = min(necrosis, 1.0 - shell / (radius * _SHAPE_RANGE[0]))
            if necrosis * radius < 0.5 * spacing:  # no core the grid could show
                necrosis = 0.0
        edema = float(np.clip(radius * np.exp(rng.normal(0.0, 0.45)), shell, MAX_EDEMA_MM))

        outer = radius * _SHAPE_RANGE[1]
        free = np.ones(len(points), dtype=bool)
        for placed, placed_reach in zip(lesions, reach):
            distance = np.linalg.norm((voxels - np.asarray(placed.centre)) * spacing, axis=1)
            # two voxels of clearance, so that lesions stay separate 26-connected components
            free &= distance > outer + edema + placed_reach + 2.0 * spacing
        needed = outer + shell + slack
        eligible = free & (depth >= needed)
        weights = np.where(eligible, junction, 0.0)
        if weights.sum() <= 0.0:
            weights = eligible.astype(np.float64)  # no junction site deep enough: any deep site
        if weights.sum() <= 0.0:
            deepest = float(depth[free].max()) if free.any() else 0.0
            radius = (deepest - shell - slack) / _SHAPE_RANGE[1]
            if radius < RADIUS_MM_RANGE[0]:
                continue
            outer = radius * _SHAPE_RANGE[1]
            weights = (free & (depth >= deepest - 1e-6)).astype(np.float64)
            necrosis = 0.0
        choice = int(rng.choice(len(points), p=weights / weights.sum()))
        jitter = rng.integers(-(coarse.stride // 2), coarse.stride // 2 + 1, size=3)
        centre = tuple(int(np.clip(voxels[choice, a] + jitter[a], 0, anatomy.shape[a] - 1)) for a in range(3))
        lesions.append(
            Lesion(
                centre=centre,  # type: ignore[arg-type]
                radius_mm=float(radius),
                necrosis_fraction=float(necrosis),
                edema_mm=edema,
                shape=_random_shape(rng, 0.06),
                necrosis_shape=_random_shape(rng, 0.08),
                edema_shape=_random_shape(rng, 0.15),
            )
        )
        reach.append(outer + edema)
    return lesions


@dataclass
class LesionFractions:
    """Partial-volume fractions of the nested regions over ``box`` (slices of the grid).

    ``wt >= tc >= netc`` voxel-wise; a voxel's label is NETC where ``netc >= 0.5``,
    else ET where ``tc >= 0.5``, else SNFH where ``wt >= 0.5``.
    """

    box: tuple[slice, slice, slice]
    wt: np.ndarray
    tc: np.ndarray
    netc: np.ndarray

    def labels(self) -> np.ndarray:
        seg = np.zeros(self.wt.shape, dtype=np.uint8)
        seg[self.wt >= 0.5] = SNFH
        seg[self.tc >= 0.5] = ET
        seg[self.netc >= 0.5] = NETC
        return seg


def rasterize_lesions(lesions: list[Lesion], anatomy: Anatomy, spacing: float) -> LesionFractions | None:
    """Fractions of every lesion region on the grid, clipped to the brain; None without lesions.

    Each region's fraction falls linearly from 1 to 0 over one voxel across its
    surface (partial volume), and overlapping lesions combine by maximum, which
    keeps the regions nested.
    """
    if not lesions:
        return None
    shape = anatomy.shape
    shell = max(MIN_SHELL_MM, MIN_SHELL_VOXELS * spacing)
    half_sizes = [
        int(np.ceil((lesion.radius_mm * _SHAPE_RANGE[1] + lesion.edema_mm) / spacing)) + 2 for lesion in lesions
    ]
    low = np.min([np.subtract(l.centre, h) for l, h in zip(lesions, half_sizes)], axis=0).clip(0)
    high = np.max([np.add(l.centre, h + 1) for l, h in zip(lesions, half_sizes)], axis=0).clip(None, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    box_shape = tuple(int(b - a) for a, b in zip(low, high))

    brain = anatomy.brain_mask()[box]
    wm = anatomy.dense(anatomy.fractions[:, 1])[box]
    wt = np.zeros(box_shape, dtype=np.float32)
    tc = np.zeros(box_shape, dtype=np.float32)
    netc = np.zeros(box_shape, dtype=np.float32)

    for lesion, half in zip(lesions, half_sizes):
        sub = tuple(
            slice(max(c - half, int(lo)), min(c + half + 1, int(hi)))
            for c, lo, hi in zip(lesion.centre, low, high)
        )
        local = tuple(slice(s.start - int(lo), s.stop - int(lo)) for s, lo in zip(sub, low))
        offsets = np.ogrid[tuple(slice(s.start - c, s.stop - c) for s, c in zip(sub, lesion.centre))]
        dx, dy, dz = (o.astype(np.float32) * spacing for o in offsets)
        r = np.sqrt(dx * dx + dy * dy + dz * dz)
        safe = np.maximum(r, 1e-6)
        unit = (dx / safe, dy / safe, dz / safe)

        surface = lesion.radius_mm * _modulation(lesion.shape, unit)
        # edema reaches further along white matter than into cortex
        reach = lesion.edema_mm * np.clip(0.15 + wm[local], 0.0, 1.0) * _modulation(lesion.edema_shape, unit)
        reach = np.clip(reach, shell, lesion.edema_mm)

        def fraction(threshold: np.ndarray) -> np.ndarray:
            return np.clip(0.5 + (threshold - r) / spacing, 0.0, 1.0).astype(np.float32)

        np.maximum(wt[local], fraction(surface + reach), out=wt[local])
        np.maximum(tc[local], fraction(surface), out=tc[local])
        if lesion.has_necrosis:
            core = lesion.necrosis_fraction * lesion.radius_mm * _modulation(lesion.necrosis_shape, unit)
            core = np.minimum(core, surface - shell)
            np.maximum(netc[local], fraction(core), out=netc[local])

    for region in (wt, tc, netc):
        region *= brain
    _enforce_nesting(netc, tc, brain)
    _enforce_nesting(tc, wt, brain)
    _drop_detached_edema(wt, tc)
    return LesionFractions(box=box, wt=wt, tc=tc, netc=netc)


def _drop_detached_edema(wt: np.ndarray, tc: np.ndarray) -> None:
    """Remove edema islands that do not touch a tumour.

    The edema's reach follows the white matter voxel by voxel, so a finger of
    white matter can hold edema that the grey matter between it and the tumour
    does not; such an island would count as a separate lesion without a
    tumour core, which metastases do not have.
    """
    from scipy.ndimage import label

    components, count = label(wt >= 0.5, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return
    with_tumour = np.unique(components[tc >= 0.5])
    keep = np.zeros(count + 1, dtype=bool)
    keep[with_tumour] = True
    keep[0] = True  # background: leave the sub-threshold partial volume alone
    wt[~keep[components]] = 0.0


def _enforce_nesting(inner: np.ndarray, outer: np.ndarray, brain: np.ndarray) -> None:
    """Make the ``outer`` region cover every brain voxel touching the ``inner`` one (26-neighbours).

    The shell widths above already give this nearly always; this guards the
    rare voxel where a strongly lobulated surface turns within one voxel.
    Added voxels get fraction 0.5 of ``outer`` (just inside it).
    """
    from scipy.ndimage import maximum_filter

    grown = maximum_filter((inner >= 0.5).view(np.uint8), size=3).astype(bool)
    missing = grown & brain & (outer < 0.5)
    outer[missing] = 0.5
