"""3D scans: load NIfTI volumes and DICOM series, predict slice by slice, measure the tumor.

Geometry. A :class:`Volume` holds the voxels in the input's own grid and the affine that maps
voxel indices to RAS+ millimetres (NIfTI's convention). Prediction runs on axial slices of the
RAS-canonical volume (:func:`nibabel.orientations.io_orientation`), each shown the way radiology
displays an axial DICOM slice (anterior at the top, the patient's right on the left), and the
predicted mask is mapped back into the input's grid, so ``<stem>_mask.nii.gz`` written with the
input's affine and header lies exactly over the scan in ITK-SNAP or 3D Slicer.

DICOM series. DICOM positions are in LPS+ (x to the patient's left, y to posterior); NIfTI is
RAS+. For slices sorted along the normal n = row cosine x column cosine, with voxel (i, j, k) =
(column, row, slice), the LPS affine has columns ``rowcos * PixelSpacing[1]``,
``colcos * PixelSpacing[0]``, the step between slice positions, and ``ImagePositionPatient`` of
the first slice; the RAS affine is ``diag(-1, -1, 1, 1) @ affine_lps`` (x and y change sign).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tumor_det.inputs import InputError, dicom_pixels

import numpy as np

if TYPE_CHECKING:
    from tumor_det.predictor import TumorPrediction, TumorPredictor

    import nibabel as nib

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """Voxels in the input's grid, the voxel -> RAS+ mm affine and the NIfTI header if any."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None

    @property
    def voxel_volume_mm3(self) -> float:
        """The volume of one voxel in mm³ (|det| of the affine's 3x3 part)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))


@dataclass
class VolumePrediction:
    """A volume's prediction; ``mask`` is in the input's grid, ``slices`` in display order."""

    mask: np.ndarray  # bool, same shape as the input volume
    affine: np.ndarray
    voxel_volume_mm3: float
    slices: list[TumorPrediction]  # axial slices of the RAS-canonical volume, inferior first
    num_tumors: int  # 3D connected components (26-connected) of the mask
    tumor_scores: list[float]  # per component: the best score of the detections forming it

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def volume_ml(self) -> float:
        """Tumor volume in mL: voxel count x voxel volume (mm³) / 1000."""
        return self.voxels * self.voxel_volume_mm3 / 1000.0

    @property
    def slice_range(self) -> tuple[int, int] | None:
        """First and last axial slice (canonical, 0-based, inferior first) with tumor."""
        hits = [k for k, p in enumerate(self.slices) if p.mask.any()]
        return (hits[0], hits[-1]) if hits else None


def load_nifti(path: Path) -> Volume:
    """Load a ``.nii``/``.nii.gz`` volume (4D: the first volume is used)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.dtype.fields is not None or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"unsupported NIfTI data type {data.dtype}")
    if data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim > 3:
        if int(np.prod(data.shape[3:])) > 1:
            logger.warning("%s: %dD NIfTI, using its first volume", path, data.ndim)
        data = data.reshape(data.shape[:3] + (-1,))[..., 0]
    if data.ndim != 3 or min(data.shape) == 0:
        raise InputError(f"unsupported NIfTI shape {data.shape}")
    return Volume(data, np.asarray(img.affine, dtype=np.float64), img.header)


def load_dicom_series(files: Sequence[Path]) -> Volume:
    """Stack the slices of one DICOM series into a volume with its RAS+ affine."""
    import pydicom

    slices = []
    for path in files:
        try:
            slices.append(pydicom.dcmread(path, force=True))
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"unreadable DICOM slice {path.name} ({exc})") from exc
    first = slices[0]
    try:
        orientation = np.array([float(v) for v in first.ImageOrientationPatient])
        row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError("DICOM series lacks ImageOrientationPatient/PixelSpacing") from exc
    rowcos, colcos = orientation[:3], orientation[3:]
    normal = np.cross(rowcos, colcos)

    def position(ds) -> np.ndarray | None:
        ipp = ds.get("ImagePositionPatient")
        return np.array([float(v) for v in ipp]) if ipp is not None and len(ipp) == 3 else None

    positions = [position(ds) for ds in slices]
    if all(p is not None for p in positions):
        depths = np.array([float(p @ normal) for p in positions])
        order = np.argsort(depths, kind="stable")
        if len(depths) > 1 and np.diff(depths[order]).min() < 1e-3:
            raise InputError("DICOM series has several slices at one position "
                             "(several echoes or series under one SeriesInstanceUID?)")
    else:
        logger.warning("%s: slices lack ImagePositionPatient, sorted by InstanceNumber",
                       files[0].parent)
        order = np.argsort([int(ds.get("InstanceNumber", 0) or 0) for ds in slices], kind="stable")
    slices = [slices[i] for i in order]
    stack = [dicom_pixels(ds) for ds in slices]
    if len({a.shape for a in stack}) != 1 or stack[0].ndim != 2:
        raise InputError("DICOM series slices differ in size or are not grey")
    data = np.stack([a.T for a in stack], axis=2)  # voxel (i, j, k) = (column, row, slice)

    if all(p is not None for p in positions):
        ordered = [positions[i] for i in order]
        step = (ordered[-1] - ordered[0]) / max(len(ordered) - 1, 1)
        origin = ordered[0]
    else:
        origin = np.zeros(3)
        step = np.zeros(3)
    if len(slices) == 1 or np.linalg.norm(step) < 1e-6:
        thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1)
        step = normal * thickness
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = rowcos * col_spacing
    affine_lps[:3, 1] = colcos * row_spacing
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = origin
    return Volume(data, LPS_TO_RAS @ affine_lps)


def to_display_slices(volume: Volume) -> tuple[np.ndarray, tuple[float, float]]:
    """Axial slices of the RAS-canonical volume as (K, rows, cols) and their (row, col) mm.

    Slice ``k`` is shown as radiology shows axial images: rows go anterior -> posterior and
    columns the patient's right -> left. The array is a view when no copy is needed.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(volume.affine)
    canon = apply_orientation(volume.data, ornt)
    canon_affine = volume.affine @ inv_ornt_aff(ornt, volume.data.shape)
    zooms = np.sqrt((canon_affine[:3, :3] ** 2).sum(axis=0))
    return canon[::-1, ::-1, :].transpose(2, 1, 0), (float(zooms[1]), float(zooms[0]))


def from_display_slices(mask: np.ndarray, volume: Volume) -> np.ndarray:
    """Inverse of :func:`to_display_slices`: a (K, rows, cols) mask into the input's grid."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    canon = mask.transpose(2, 1, 0)[::-1, ::-1, :]
    back = ornt_transform(axcodes2ornt("RAS"), io_orientation(volume.affine))
    return np.ascontiguousarray(apply_orientation(canon, back))


def predict_volume(
    predictor: TumorPredictor,
    volume: Volume,
    batch_size: int = 4,
    on_batch: Callable[[int], None] | None = None,
) -> VolumePrediction:
    """Predict every axial slice, ``batch_size`` slices per forward pass; see the module doc."""
    from scipy import ndimage

    display, spacing = to_display_slices(volume)
    preds: list[TumorPrediction] = []
    for start in range(0, len(display), max(1, batch_size)):
        batch = list(display[start : start + batch_size])
        preds.extend(predictor.predict_batch(batch, pixel_spacing=spacing))
        if on_batch:
            on_batch(len(batch))
    disp_mask = np.stack([p.mask for p in preds])
    labels, count = ndimage.label(disp_mask, structure=np.ones((3, 3, 3), bool))
    best = np.zeros(count + 1)
    for k, pred in enumerate(preds):
        for score, inst_mask in zip(pred.scores, pred.instances.pred_masks.numpy(), strict=True):
            ids = np.unique(labels[k][inst_mask])
            best[ids] = np.maximum(best[ids], score)
    return VolumePrediction(
        mask=from_display_slices(disp_mask, volume),
        affine=volume.affine,
        voxel_volume_mm3=volume.voxel_volume_mm3,
        slices=preds,
        num_tumors=int(count),
        tumor_scores=[float(s) for s in best[1:]],
    )
