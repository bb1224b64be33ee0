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

The write side, :func:`write_dicom_series`, is the inverse: a :class:`Volume` -> one MR Image
Storage file per voxel plane ``k``, its geometry from the affine (RAS -> LPS), so that
:func:`load_dicom_series` gives back the voxels and the affine. :func:`lps_grid` puts a volume in
the grid scanners store axial slices in (``ImageOrientationPatient`` [1, 0, 0, 0, 1, 0]).
"""

from __future__ import annotations

import copy
import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tumor_det.io.base import Image2D, InputError, ReaderWriter, check_affine
from tumor_det.io.geometry import LPS_TO_RAS, Volume, canonical
from tumor_det.io.image2d import write_mask_png
from tumor_det.io.nifti import write_nifti
from tumor_det.utils.atomic import atomic_path

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
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise InputError(f"DICOM RescaleSlope/RescaleIntercept are not numbers ({exc})") from exc
    if slope != 1 or intercept != 0:
        pixels = pixels.astype(np.float32) * slope + intercept
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels
    return pixels


def dicom_spacing(ds) -> tuple[float, float] | None:
    """``PixelSpacing`` as (row spacing, column spacing) in mm, or None when absent."""
    spacing = ds.get("PixelSpacing")
    try:
        row, col = (float(v) for v in spacing)
    except (TypeError, ValueError):  # absent, one value, or not numbers: unknown spacing
        return None
    return (row, col) if row > 0 and col > 0 and np.isfinite([row, col]).all() else None


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
    if orientation.shape != (6,) or not np.isfinite(orientation).all():
        raise InputError(f"DICOM series: ImageOrientationPatient needs 6 numbers, got "
                         f"{list(first.ImageOrientationPatient)}")
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
    return DicomSeries(data, check_affine(LPS_TO_RAS @ affine_lps, "DICOM series"),
                       files=sorted_files)


def lps_grid(volume: Volume) -> Volume:
    """The volume in its closest LPS+ grid (columns to the patient's left, rows to posterior,
    slices inferior to superior), as scanners store axial slices; the same scan (no header)."""
    canon = canonical(volume)
    flip = LPS_TO_RAS.copy()  # i -> nx - 1 - i, j -> ny - 1 - j
    flip[:2, 3] = np.array(canon.data.shape[:2]) - 1
    return Volume(canon.data[::-1, ::-1], canon.affine @ flip)


def _ds(value: float) -> str:
    """A number as a DICOM decimal string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _int16_voxels(data: np.ndarray) -> np.ndarray:
    """Voxels as int16 (rounded); a ValueError when they do not fit."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"a DICOM series needs a 3D volume, got shape {data.shape}")
    rounded = np.rint(data) if data.dtype.kind == "f" else data
    if rounded.size and (rounded.min() < -32768 or rounded.max() > 32767):
        raise ValueError(f"voxels {rounded.min()}..{rounded.max()} do not fit int16 pixels")
    return rounded.astype(np.int16)


def series_geometry(affine: np.ndarray) -> dict[str, np.ndarray]:
    """The LPS geometry of a voxel -> RAS+ ``affine``: row/column cosines, pixel spacing (row,
    column), the slice step and normal, and the origin (the first slice's position)."""
    lps = LPS_TO_RAS @ np.asarray(affine, float)
    col_spacing, row_spacing = np.linalg.norm(lps[:3, :2], axis=0)
    if min(col_spacing, row_spacing) < 1e-6:
        raise ValueError("the affine has a zero in-plane voxel size")
    rowcos, colcos = lps[:3, 0] / col_spacing, lps[:3, 1] / row_spacing
    if abs(rowcos @ colcos) > 1e-4:
        raise ValueError("DICOM needs perpendicular row and column directions (sheared affine)")
    normal = np.cross(rowcos, colcos)
    step = lps[:3, 2]
    if step @ normal < 1e-6:
        raise ValueError("the slice axis must point along row x column direction (a "
                         "left-handed grid: write lps_grid(volume) instead)")
    return {"rowcos": rowcos, "colcos": colcos, "spacing": np.array([row_spacing, col_spacing]),
            "step": step, "normal": normal, "origin": lps[:3, 3]}


def _series_header(description: str, patient_id: str, patient_name: str,
                   series_number: int):
    """The dataset elements every slice of a new series shares (new Study/Series/FoR UIDs)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import MRImageStorage, generate_uid

    now = datetime.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MRImageStorage
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "tumor-det"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = ds.SeriesDescription = description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.ScanningSequence = "RM"  # research mode: synthetic
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    return ds


def write_dicom_series(volume: Volume, folder: Path, *, description: str = "tumor-det synthetic",
                       patient_id: str = "TUMOR-DET-SYNTH", patient_name: str = "Synthetic^Scan",
                       series_number: int = 1) -> list[Path]:
    """Write ``volume`` as an MR series: ``folder/IM0001.dcm`` ... (one per voxel plane ``k``,
    pixel (row j, column i) = voxel (i, j, k)); returns the files in ``k`` order.

    New Study, Series, SOP Instance and Frame of Reference UIDs; int16 pixels (rounded; a
    ValueError when they do not fit), rescale slope 1, intercept 0; ``PixelSpacing``,
    ``ImageOrientationPatient``, ``ImagePositionPatient`` and ``SliceThickness`` from the
    affine (see :func:`series_geometry`: the grid must be right-handed in LPS, i.e.
    ``det(affine) > 0``, like every RAS+ or LPS+ grid). ``folder`` may hold earlier files of
    these names only (a FileExistsError otherwise: a series folder is read as one series).
    Each file is written atomically.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    geo = series_geometry(volume.affine)
    voxels = _int16_voxels(volume.data)
    folder = Path(folder)
    names = [f"IM{k + 1:04d}.dcm" for k in range(voxels.shape[2])]
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir()
                        if not p.name.startswith(".") and p.name not in names)
        if others:
            raise FileExistsError(f"{folder} holds other files ({', '.join(others[:3])}): "
                                  "write a DICOM series into an empty folder")
    shared = _series_header(description, patient_id, patient_name, series_number)
    shared.Rows, shared.Columns = voxels.shape[1], voxels.shape[0]
    shared.PixelSpacing = [_ds(v) for v in geo["spacing"]]
    shared.ImageOrientationPatient = [_ds(v) for v in (*geo["rowcos"], *geo["colcos"])]
    shared.SliceThickness = shared.SpacingBetweenSlices = _ds(geo["step"] @ geo["normal"])
    low, high = (int(voxels.min()), int(voxels.max())) if voxels.size else (0, 0)
    shared.WindowCenter, shared.WindowWidth = _ds((low + high) / 2), _ds(max(high - low, 1))
    files = []
    for k, name in enumerate(names):
        ds = copy.deepcopy(shared)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        position = geo["origin"] + k * geo["step"]
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position @ geo["normal"])
        ds.PixelData = np.ascontiguousarray(voxels[:, :, k].T).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        with atomic_path(folder / name) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        files.append(folder / name)
    return files


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
