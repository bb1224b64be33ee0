"""DICOM: a 2D file -> :class:`Image2D`; the slices of one series -> a RAS+ :class:`Volume`.

Pixels get the modality rescale (``RescaleSlope``/``RescaleIntercept``) and MONOCHROME1 is
inverted. A series' slices are sorted along the normal n = row cosine x column cosine (by
``ImagePositionPatient``; ``InstanceNumber`` when positions are missing), with voxel
(i, j, k) = (column, row, slice). DICOM positions are LPS+ (x to the patient's left, y to
posterior) and NIfTI's RAS+: the LPS affine has columns ``rowcos * PixelSpacing[1]``,
``colcos * PixelSpacing[0]``, the step between slice positions and the first slice's
``ImagePositionPatient``; the RAS affine is ``diag(-1, -1, 1, 1) @ affine_lps``. A series is
read as a :class:`DicomSeries`, a volume that remembers the file of each slice (what a DICOM-SEG
of it references: :mod:`tumor_det.io.dicom_seg`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tumor_det.geometry import LPS_TO_RAS, Volume
from tumor_det.io.base import Image2D, InputError, ReaderWriter
from tumor_det.io.image2d import write_mask_png
from tumor_det.io.nifti import write_nifti

import numpy as np

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom_file(path: Path) -> bool:
    """True for ``.dcm``/``.dicom`` names and for files with the ``DICM`` preamble marker."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def series_uid(path: Path) -> str | None:
    """The file's ``SeriesInstanceUID``, or None when it has none or cannot be parsed."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - any parse error makes the file unreadable
        return None
    uid = ds.get("SeriesInstanceUID")
    return str(uid) if uid else None


def dicom_pixels(ds) -> np.ndarray:
    """A DICOM dataset's pixels with the modality rescale and MONOCHROME1 inversion applied."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - missing decoder, truncated data, ...
        raise InputError(f"cannot decode DICOM pixels ({type(exc).__name__}: {exc})") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"multi-frame DICOM ({frames} frames) is not supported")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        pixels = pixels.astype(np.float32) * slope + intercept
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels
    return pixels


def dicom_spacing(ds) -> tuple[float, float] | None:
    """``PixelSpacing`` as (row spacing, column spacing) in mm, or None when absent."""
    spacing = ds.get("PixelSpacing")
    if not spacing or len(spacing) != 2:
        return None
    row, col = (float(v) for v in spacing)
    return (row, col) if row > 0 and col > 0 else None


def read_dicom(path: Path) -> Image2D:
    """A 2D DICOM file: (pixels, rgb, pixel spacing (row, column) mm or None)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise InputError("DICOM file has no pixel data")
    pixels = dicom_pixels(ds)
    rgb = int(ds.get("SamplesPerPixel", 1)) == 3
    return Image2D(pixels, rgb, dicom_spacing(ds))


def _position(ds) -> np.ndarray | None:
    ipp = ds.get("ImagePositionPatient")
    return np.array([float(v) for v in ipp]) if ipp is not None and len(ipp) == 3 else None


@dataclass
class DicomSeries(Volume):
    """A DICOM series as a volume; ``files[k]`` holds voxel plane ``data[:, :, k]`` (its pixels
    transposed: voxel (i, j, k) is column i, row j of ``files[k]``)."""

    files: tuple[Path, ...] = ()


def load_dicom_series(files: Sequence[Path]) -> DicomSeries:
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

    positions = [_position(ds) for ds in slices]
    located = all(p is not None for p in positions)
    if located:
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
    sorted_files = tuple(Path(files[i]) for i in order)
    stack = [dicom_pixels(ds) for ds in slices]
    if len({a.shape for a in stack}) != 1 or stack[0].ndim != 2:
        raise InputError("DICOM series slices differ in size or are not grey")
    data = np.stack([a.T for a in stack], axis=2)  # voxel (i, j, k) = (column, row, slice)

    if located:
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
    return DicomSeries(data, LPS_TO_RAS @ affine_lps, files=sorted_files)


class DicomFileIO(ReaderWriter):
    """One DICOM file read as a 2D image; its mask is written as a PNG."""

    kind = "dicom"
    suffixes = DICOM_SUFFIXES

    def accepts(self, path: Path) -> bool:
        return is_dicom_file(Path(path))

    def read(self, *paths: Path) -> Image2D:
        (path,) = paths
        return read_dicom(path)

    def write_seg(self, seg: np.ndarray, path: Path, like: Image2D) -> Path:
        return write_mask_png(seg, path)


class DicomSeriesIO(ReaderWriter):
    """The slice files of one series read as a volume; its masks and maps are written as NIfTI
    (:mod:`tumor_det.io.dicom_seg` writes the DICOM-SEG)."""

    kind = "dicom_series"

    def accepts(self, path: Path) -> bool:
        return False  # series are found by grouping a folder's files (tumor_det.io.sources)

    def read(self, *paths: Path) -> DicomSeries:
        return load_dicom_series(paths)

    def write_seg(self, seg: np.ndarray, path: Path, like: Volume) -> Path:
        return write_nifti(seg, path, like)
