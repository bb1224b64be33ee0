"""Find and read inference inputs: images, DICOM files and series, NIfTI volumes, videos.

:func:`expand_inputs` turns ``--input`` arguments (files, folders, globs) into :class:`Source`
records without reading pixels; the ``read_*`` functions load one source and raise
:class:`InputError` with a short reason when it cannot be used. A folder contributes its own
files (not its subfolders), sorted; the DICOM files found in a folder are grouped by
``SeriesInstanceUID`` and a group of two or more slices becomes one volume. DICOM files named
directly or by a glob are read as 2D images.
"""

from __future__ import annotations

import glob
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v", ".wmv")


class InputError(Exception):
    """An input that cannot be used; the message is the reason shown in the summary."""


class UsageError(Exception):
    """A command-line problem (no such input, empty folder): reported in one line, exit 2."""


@dataclass
class Source:
    """One unit of work: ``kind`` is image, dicom, nifti, dicom_series, video or unsupported."""

    kind: str
    path: Path
    files: tuple[Path, ...] = field(default=())  # the slices of a DICOM series
    stem: str = ""
    reason: str = ""  # why an "unsupported" source is skipped

    def __post_init__(self) -> None:
        if not self.stem:
            self.stem = file_stem(self.path)

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file this source reads (outputs must never replace one of them)."""
        return self.files or (self.path,)


def file_stem(path: Path) -> str:
    """``scan.nii.gz`` -> ``scan``; ``slice.png`` -> ``slice``."""
    name = path.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return path.stem if path.suffix else name


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


def classify(path: Path) -> Source:
    """Guess a file's kind from its name (and the DICOM preamble); pixels are not read."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return Source("nifti", path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Source("image", path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return Source("video", path)
    if is_dicom_file(path):
        return Source("dicom", path)
    return Source("unsupported", path, reason=f"unsupported file type {path.suffix or '(none)'}")


def _series_uid(path: Path) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - any parse error makes the file unreadable
        return None
    uid = ds.get("SeriesInstanceUID")
    return str(uid) if uid else None


def expand_folder(folder: Path) -> list[Source]:
    """The folder's files, sorted; its DICOM slices grouped into series volumes."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UsageError(f"--input {folder}: folder has no files")
    sources: list[Source] = []
    series: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        src = classify(path)
        if src.kind != "dicom":
            sources.append(src)
            continue
        uid = _series_uid(path)
        if uid is None:
            sources.append(src)  # read as a 2D DICOM (or skipped as unreadable then)
        else:
            series[uid].append(path)
    multi = [(uid, paths) for uid, paths in series.items() if len(paths) > 1]
    for uid, paths in series.items():
        if len(paths) == 1:
            sources.append(Source("dicom", paths[0]))
            continue
        stem = folder.name if len(multi) == 1 else f"{folder.name}_{uid.rsplit('.', 1)[-1]}"
        sources.append(Source("dicom_series", folder, files=tuple(paths), stem=stem))
    return sorted(sources, key=lambda s: str(s.paths[0]))


def expand_inputs(patterns: list[str], video: str | None = None) -> list[Source]:
    """Expand ``--input`` patterns and ``--video-input`` into sources (duplicates dropped).

    Raises :class:`UsageError` when an argument matches nothing or nothing was given.
    """
    sources: list[Source] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            sources.extend(expand_folder(path))
        elif path.is_file():
            sources.append(classify(path))
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(str(path)))
            if not matches:
                raise UsageError(f"--input {pattern}: no file matches this pattern")
            for match in map(Path, matches):
                sources.extend(expand_folder(match) if match.is_dir() else [classify(match)])
        else:
            raise UsageError(f"--input {pattern}: no such file or folder")
    if video:
        path = Path(video).expanduser()
        if not path.is_file():
            raise UsageError(f"--video-input {video}: no such file")
        sources.append(Source("video", path))
    if not sources:
        raise UsageError("no input: give --input FILE/FOLDER/GLOB or --video-input FILE")
    unique: dict[tuple[str, ...], Source] = {}
    for src in sources:
        unique.setdefault(tuple(str(p.resolve()) for p in src.paths), src)
    return list(unique.values())


def read_image(path: Path) -> np.ndarray:
    """Read an 8/16-bit, grey or colour image as OpenCV does (BGR order, alpha kept)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputError("unreadable or corrupt image")
    return image


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


def read_dicom(path: Path) -> tuple[np.ndarray, bool, tuple[float, float] | None]:
    """Return (pixels, rgb, pixel spacing (row, column) in mm or None) of a 2D DICOM file."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise InputError("DICOM file has no pixel data")
    pixels = dicom_pixels(ds)
    rgb = int(ds.get("SamplesPerPixel", 1)) == 3
    return pixels, rgb, dicom_spacing(ds)


def dicom_spacing(ds) -> tuple[float, float] | None:
    """``PixelSpacing`` as (row spacing, column spacing) in mm, or None when absent."""
    spacing = ds.get("PixelSpacing")
    if not spacing or len(spacing) != 2:
        return None
    row, col = (float(v) for v in spacing)
    return (row, col) if row > 0 and col > 0 else None


def open_video(path: Path) -> tuple[cv2.VideoCapture, float]:
    """Open a video; return the capture and its frame rate (25 when the file does not say)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError("cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0
