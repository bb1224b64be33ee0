"""The contract every reader/writer follows (modelled on nnU-Net's ``BaseReaderWriter``).

One class per format, chosen by :func:`tumor_det.io.registry.reader_for`:

* ``read(*paths)`` takes one file (a DICOM series: its slice files) and returns

  - :class:`Image2D` for 2D formats: ``pixels`` (H, W) or (H, W, C) in the file's own dtype
    (8/16-bit, int16, float), colour in BGR order unless ``rgb``, and ``spacing`` (row, col) mm
    or ``None`` when the file does not say;
  - :class:`~tumor_det.io.geometry.Volume` for 3D formats: voxels in the file's own grid, the
    voxel -> RAS+ mm affine (spacing = its column norms) and the NIfTI header if any;
  - :class:`~tumor_det.io.video.Video` for videos: a frame iterator and the frame rate;

  and raises :class:`InputError` (its message is the reason shown in a summary) when the file
  cannot be used: unreadable, truncated, unsupported.
* ``write_seg(seg, path, like)`` writes a mask or label map ``seg`` that has the shape of what
  ``read`` returned (``like``): a 2D mask as an 8-bit PNG (0/255), a volume mask in the input's
  grid with its affine and header (``.nii.gz``). Writes are atomic (:mod:`tumor_det.utils.atomic`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np


class InputError(Exception):
    """An input that cannot be used; the message is the reason shown in the summary."""


class Image2D(NamedTuple):
    """A 2D image as read: pixels in the file's dtype, BGR unless ``rgb``; (row, col) mm."""

    pixels: np.ndarray
    rgb: bool = False
    spacing: tuple[float, float] | None = None


def file_stem(path: Path) -> str:
    """``scan.nii.gz`` -> ``scan``; ``slice.png`` -> ``slice``."""
    name = Path(path).name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return Path(path).stem


class ReaderWriter(ABC):
    """Reads one format (see the module doc for what ``read`` returns) and writes masks."""

    #: the source kind (``image``, ``dicom``, ``dicom_series``, ``nifti``, ``video``).
    kind: ClassVar[str]
    #: lower-case file name endings this format is recognised by.
    suffixes: ClassVar[tuple[str, ...]] = ()

    def accepts(self, path: Path) -> bool:
        """Whether ``path`` looks like this format (by name; pixels are not read)."""
        return Path(path).name.lower().endswith(self.suffixes)

    @abstractmethod
    def read(self, *paths: Path) -> Any:
        """Read one input; raise :class:`InputError` with the reason when it cannot be used."""

    def write_seg(self, seg: np.ndarray, path: Path, like: Any) -> Path:
        """Write a mask shaped like what :meth:`read` returned (``like``), atomically."""
        raise NotImplementedError(f"{type(self).__name__} does not write segmentations")


def check_affine(affine: np.ndarray, what: str) -> np.ndarray:
    """``affine`` as float64 if it can place voxels (finite, invertible 3x3 part); otherwise
    :class:`InputError` naming ``what`` (a zero or NaN voxel size, NaN positions...)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(f"{what}: the voxel-to-world affine is not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{what}: the voxel-to-world affine is singular (a zero voxel size?)")
    return affine
