"""Volume geometry: the voxel grid, its RAS+ affine and the one rule for slicing it.

A :class:`Volume` holds voxels in the input's own grid and the affine mapping voxel indices to
RAS+ millimetres (NIfTI's convention: x to the patient's Right, y Anterior, z Superior).

Slicing (training preparation and inference both use :func:`display_slices`): the volume is
reoriented to the closest RAS+ canonical grid (:func:`nibabel.orientations.io_orientation`, as
``nibabel.as_closest_canonical`` does), so any stored orientation gives the same slices, and each
plane is shown in the radiological convention:

* axial: anterior at the top, the patient's right on the image's left (left on the right);
* coronal: superior at the top, the patient's right on the image's left;
* sagittal: superior at the top, anterior on the image's left.

Slice ``k`` of a plane is canonical index ``k`` along that plane's normal (inferior, posterior or
right first). :func:`from_display_slices` maps (K, rows, cols) arrays back into the input's grid,
so a predicted mask saved with the input's affine lies exactly over the scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

if TYPE_CHECKING:
    import nibabel as nib

#: Plane name -> the canonical (RAS+) voxel axis it is normal to.
PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}
#: DICOM patient coordinates are LPS+, NIfTI's RAS+: x and y change sign.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """Voxels in the input's grid, the voxel -> RAS+ mm affine and the NIfTI header if any."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three voxel axes (column norms of the affine)."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def voxel_volume_mm3(self) -> float:
        """The volume of one voxel in mm³ (|det| of the affine's 3x3 part)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))


def canonical(volume: Volume) -> Volume:
    """The volume in its closest RAS+ grid (a view of the voxels when possible; no header)."""
    ornt = io_orientation(volume.affine)
    data = apply_orientation(volume.data, ornt)
    return Volume(data, volume.affine @ inv_ornt_aff(ornt, volume.data.shape))


def to_radiological(planes: np.ndarray) -> np.ndarray:
    """RAS+ planes ``(..., first, second)`` -> image ``(..., rows, cols)`` (see module doc).

    Both in-plane axes are reversed (anterior/superior first; the patient's right, or anterior
    for sagittal, first) and swapped so the second canonical axis runs down the rows.
    """
    return planes[..., ::-1, ::-1].swapaxes(-1, -2)


def display_slices(volume: Volume, plane: str = "axial",
                   ) -> tuple[np.ndarray, tuple[float, float]]:
    """The slices of ``plane`` as (K, rows, cols) and their (row, col) spacing in mm.

    A view of the voxels when no copy is needed.
    """
    axis = PLANES[plane]
    canon = canonical(volume)
    first, second = (s for i, s in enumerate(canon.spacing) if i != axis)
    return to_radiological(np.moveaxis(canon.data, axis, 0)), (second, first)


def from_display_slices(slices: np.ndarray, volume: Volume, plane: str = "axial") -> np.ndarray:
    """Inverse of :func:`display_slices`: a (K, rows, cols) array into ``volume``'s grid."""
    canon = np.moveaxis(slices.swapaxes(-1, -2)[..., ::-1, ::-1], 0, PLANES[plane])
    back = ornt_transform(axcodes2ornt("RAS"), io_orientation(volume.affine))
    return np.ascontiguousarray(apply_orientation(canon, back))
