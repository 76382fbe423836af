"""Where a synthetic patient's brain lies: the BraTS grid, its affine and the per-patient warp.

Grid and header. BraTS-MET 2023 images are co-registered to the SRI24 atlas:
240 x 240 x 155 voxels of 1 mm, stored LPS (voxel axes run to the patient's
Left, Posterior and Superior) with the affine

    [[-1, 0, 0,   0],
     [ 0,-1, 0, 239],
     [ 0, 0, 1,   0]]

which is what :func:`brats_affine` returns for the default grid. For another
shape or spacing the axes stay LPS and the field of view keeps the same world
centre, so a 2 mm cohort overlays the 1 mm one in a viewer.

Placement. The template's brain bounding box is centred in x and y; in z its
centre sits :data:`BRAIN_Z_OFFSET_MM` below the centre of the field of view so
the vertex keeps a few millimetres of margin and the lower brainstem is cut,
as in BraTS.

Warp. Each patient's anatomy is the template seen through a random affine map
(head size, a few degrees of rotation, a few millimetres of shift) plus a
smooth displacement field (:class:`SmoothField`). Both are evaluated only on
the box the brain can reach, as one small matrix product per axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The BraTS (SRI24) grid.
BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)
BRATS_SPACING = 1.0
#: World (RAS mm) coordinates of the centre of the BraTS field of view.
_FOV_CENTRE_WORLD = np.array([-119.5, 119.5, 77.0])
#: LPS voxel axes: +i -> Left (-x), +j -> Posterior (-y), +k -> Superior.
_LPS = np.array([-1.0, -1.0, 1.0])
#: How far below the field-of-view centre the brain's bounding-box centre is placed.
BRAIN_Z_OFFSET_MM = 7.0


def brats_affine(shape: tuple[int, int, int] = BRATS_SHAPE, spacing: float = BRATS_SPACING) -> np.ndarray:
    """BraTS-style voxel-to-world (RAS mm) affine: LPS axes, ``spacing`` mm, SRI24 field centre."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag(_LPS * spacing)
    half = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = _FOV_CENTRE_WORLD - affine[:3, :3] @ half
    return affine


class SmoothField:
    """A smooth scalar field over the field of view: a small separable cosine series.

    ``f(i, j, k) = sum_pqr C[p, q, r] cos(pi p x) cos(pi q y) cos(pi r z)`` with
    ``x, y, z`` the voxel position scaled to 0..1 across the field of view. With
    a handful of terms per axis this is the kind of field a coarse random grid
    smoothed with a wide Gaussian gives, but it is exact everywhere and cheap on
    a box of voxels: the (q, r) sums are done once on the y-z plane, the p sum
    is one small matrix product (:meth:`on_box`).
    """

    def __init__(self, coefficients: np.ndarray, shape: tuple[int, int, int]):
        self.coefficients = np.asarray(coefficients, dtype=np.float64)
        self.shape = tuple(shape)

    @property
    def terms(self) -> int:
        return self.coefficients.shape[0]

    @classmethod
    def random(cls, rng: np.random.Generator, shape: tuple[int, int, int], terms: int, rms: float) -> "SmoothField":
        """A zero-mean random field whose energy falls with frequency, scaled to RMS ``rms``."""
        order = np.add.outer(np.add.outer(np.arange(terms), np.arange(terms)), np.arange(terms))
        coefficients = rng.standard_normal((terms,) * 3) / (1.0 + order) ** 1.5
        coefficients[0, 0, 0] = 0.0  # the mean is set by whoever uses the field
        # cos(pi p x) has mean square 1 for p = 0 and 1/2 otherwise on [0, 1], and
        # the products are orthogonal, so this is the field's exact RMS over the field of view.
        weight = np.where(np.arange(terms) == 0, 1.0, 0.5)
        mean_square = float((coefficients**2 * np.einsum("p,q,r->pqr", weight, weight, weight)).sum())
        coefficients *= rms / max(np.sqrt(mean_square), 1e-12)
        return cls(coefficients, shape)

    def basis(self, axis: int, index: np.ndarray) -> np.ndarray:
        """Cosine basis (len(index), terms) along ``axis`` at voxel indices ``index``."""
        position = np.asarray(index, dtype=np.float64) / max(self.shape[axis] - 1, 1)
        return np.cos(np.pi * np.outer(position, np.arange(self.terms)))

    def plane(self, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        """``P[p, j, k] = sum_qr C[p, q, r] By[j, q] Bz[k, r]`` (terms, len(j), len(k))."""
        return np.einsum("pqr,jq,kr->pjk", self.coefficients, self.basis(1, j), self.basis(2, k))

    def on_box(self, i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Field values (float32) on the box ``i x j x k`` of voxel indices."""
        plane = self.plane(j, k).reshape(self.terms, -1).astype(np.float32)
        return (self.basis(0, i).astype(np.float32) @ plane).reshape(len(i), len(j), len(k))


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Warp:
    """Maps output voxels of one patient to template voxel coordinates.

    ``template = anchor + L @ (voxel - centre) + displacement(voxel)``, with
    ``L`` the output-voxel-to-template-mm matrix (spacing, LPS flip and the
    inverse of the patient's head affine) and ``displacement`` a
    :class:`SmoothField` per template axis (mm).
    """

    shape: tuple[int, int, int]
    spacing: float
    linear: np.ndarray  # (3, 3)
    centre: np.ndarray  # output voxel that maps to ``anchor`` before displacement
    anchor: np.ndarray  # template voxel
    displacement: tuple[SmoothField, SmoothField, SmoothField]
    head_scale: float

    def _linear_part(self, axis: int, index: np.ndarray) -> np.ndarray:
        """(3, len(index)): what output axis ``axis`` contributes to each template axis."""
        return self.linear[:, axis : axis + 1] * (np.asarray(index, dtype=np.float64) - self.centre[axis])[None, :]

    def template_coords_on_box(self, i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Template voxel coordinates (3, len(i), len(j), len(k)) float32 on a box of voxels.

        The affine part is folded into the displacement's series (its constant
        ``p = 0`` term and one extra linear term in ``i``), so each component is
        a single (len(i), terms + 1) x (terms + 1, len(j) len(k)) matrix product.
        """
        out = np.empty((3, len(i), len(j), len(k)), dtype=np.float32)
        lin_i, lin_j, lin_k = self._linear_part(0, i), self._linear_part(1, j), self._linear_part(2, k)
        for c in range(3):
            field = self.displacement[c]
            plane = field.plane(j, k)
            plane[0] += self.anchor[c] + lin_j[c][:, None] + lin_k[c][None, :]  # basis_x[:, 0] == 1
            rows = np.concatenate([field.basis(0, i), lin_i[c][:, None]], axis=1).astype(np.float32)
            planes = np.concatenate([plane, np.ones((1, len(j), len(k)))]).reshape(field.terms + 1, -1)
            out[c] = (rows @ planes.astype(np.float32)).reshape(len(i), len(j), len(k))
        return out


def random_warp(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: float,
    template_centre: np.ndarray,
) -> Warp:
    """Draw one patient's head geometry.

    Head size varies about +-6 % (with a little anisotropy), rotation a few
    degrees about each axis, position a few millimetres, and a smooth
    displacement of about 1-2.5 mm RMS bends the anatomy locally.
    """
    scale = rng.uniform(0.94, 1.05) * rng.uniform(0.97, 1.03, size=3)
    angles = np.deg2rad(np.clip(rng.normal(0.0, 3.0, size=3), -7.0, 7.0))
    # less freedom upwards: the vertex has only a few mm of room in a 155 mm field
    shift_mm = np.clip(rng.normal(0.0, 2.5, size=3), [-5.0, -5.0, -4.0], [5.0, 5.0, 1.0])
    head = _rotation(angles) @ np.diag(scale)  # template mm -> patient mm (RAS)

    affine = brats_affine(shape, spacing)
    centre_world = _FOV_CENTRE_WORLD - np.array([0.0, 0.0, BRAIN_Z_OFFSET_MM]) + shift_mm
    centre_voxel = np.linalg.solve(affine[:3, :3], centre_world - affine[:3, 3])
    # output voxel -> world mm offset (affine) -> template mm offset (inverse head map);
    # the template grid is RAS with 1 mm voxels, so template mm == template voxels.
    linear = np.linalg.inv(head) @ affine[:3, :3]

    rms = rng.uniform(1.0, 2.5)
    displacement = tuple(SmoothField.random(rng, shape, terms=4, rms=rms) for _ in range(3))
    return Warp(
        shape=tuple(shape),
        spacing=float(spacing),
        linear=linear,
        centre=centre_voxel,
        anchor=np.asarray(template_centre, dtype=np.float64),
        displacement=displacement,  # type: ignore[arg-type]
        head_scale=float(np.prod(scale) ** (1.0 / 3.0)),
    )
