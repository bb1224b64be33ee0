"""NIfTI volumes: read into a :class:`Volume`, write masks, label maps and maps in its grid.

Outputs are written with the input's affine and header (no scaling), so they open aligned over
the scan in ITK-SNAP or 3D Slicer; a volume without a NIfTI header (a DICOM series) gets a
NIfTI-1 header whose qform and sform are the affine. Data types (:func:`nifti_dtype`): masks
and label maps up to 255 uint8, larger label maps uint16 (int32 beyond), float maps
(probabilities) float32.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tumor_det.io.base import InputError, ReaderWriter, check_affine
from tumor_det.io.geometry import Volume
from tumor_det.utils.atomic import atomic_path

import nibabel as nib
import numpy as np

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def load_nifti(path: Path, channel: int | None = None) -> Volume:
    """A ``.nii``/``.nii.gz`` volume; of a 4D one, volume ``channel`` (default: the first)."""
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a broken file
        raise InputError(f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.dtype.fields is not None or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"unsupported NIfTI data type {data.dtype}")
    if data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim > 3:
        data = data.reshape(data.shape[:3] + (-1,))
        if channel is None and data.shape[3] > 1:
            logger.warning("%s: %dD NIfTI, using its first volume", path, img.ndim)
        if not 0 <= (channel or 0) < data.shape[3]:
            raise InputError(f"NIfTI has {data.shape[3]} volumes, no channel {channel}")
        data = data[..., channel or 0]
    if data.ndim != 3 or min(data.shape) == 0:
        raise InputError(f"unsupported NIfTI shape {data.shape}")
    return Volume(data, check_affine(img.affine, "NIfTI"), img.header)


def nifti_dtype(seg: np.ndarray) -> np.dtype:
    """uint8 for a mask or labels up to 255, uint16/int32 for more labels, float32 for floats."""
    if np.issubdtype(seg.dtype, np.floating):
        return np.dtype(np.float32)
    top = int(seg.max(initial=0))
    if top <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16 if top <= np.iinfo(np.uint16).max else np.int32)


def write_nifti(seg: np.ndarray, path: Path, like: Volume) -> Path:
    """Write a mask, label map or float map in ``like``'s grid with its affine and header
    (data type :func:`nifti_dtype`, no scaling), atomically."""
    data = np.asarray(seg).astype(nifti_dtype(np.asarray(seg)))
    header = like.header
    if isinstance(header, nib.Nifti1Header):  # also Nifti2Header
        header = header.copy()
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(None, None)
        header["cal_min"], header["cal_max"] = 0, data.max(initial=1)
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        img = image_class(data, like.affine, header)
    else:
        img = nib.Nifti1Image(data, like.affine)
        img.set_qform(like.affine, code="scanner")
        img.set_sform(like.affine, code="scanner")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def write_nifti_mask(seg: np.ndarray, path: Path, like: Volume) -> Path:
    """Write a uint8 mask/label map in ``like``'s grid with its affine and header, atomically."""
    return write_nifti(np.asarray(seg).astype(np.uint8), path, like)


class NiftiIO(ReaderWriter):
    """``.nii``/``.nii.gz`` volumes and masks."""

    kind = "nifti"
    suffixes = NIFTI_SUFFIXES

    def read(self, *paths: Path) -> Volume:
        (path,) = paths
        return load_nifti(path)

    def write_seg(self, seg: np.ndarray, path: Path, like: Volume) -> Path:
        return write_nifti(seg, path, like)
