"""Pick the reader/writer of an input: by kind, or by file name (and the DICOM preamble)."""

from __future__ import annotations

from pathlib import Path

from tumor_det.io.base import ReaderWriter
from tumor_det.io.dicom import DicomFileIO, DicomSeriesIO
from tumor_det.io.image2d import ImageFileIO
from tumor_det.io.nifti import NiftiIO
from tumor_det.io.video import VideoIO

#: In the order file names are tried: NIfTI, 2D images, videos, then DICOM (whose files may
#: have any name: the ``DICM`` preamble is read).
READERS: dict[str, ReaderWriter] = {
    rw.kind: rw for rw in (NiftiIO(), ImageFileIO(), VideoIO(), DicomFileIO(), DicomSeriesIO())
}
#: Kinds read as 2D images (:class:`~tumor_det.io.base.Image2D`).
KINDS_2D = ("image", "dicom")


def kind_of(path: Path) -> str | None:
    """The kind of the file at ``path`` from its name (pixels are not read), or None."""
    return next((kind for kind, rw in READERS.items() if rw.accepts(Path(path))), None)


def reader_for(kind_or_path: str | Path) -> ReaderWriter:
    """The reader/writer of a kind (``"nifti"``) or of a file; ``KeyError`` when none fits."""
    if isinstance(kind_or_path, str) and kind_or_path in READERS:
        return READERS[kind_or_path]
    kind = kind_of(Path(kind_or_path))
    if kind is None:
        raise KeyError(f"no reader for {kind_or_path}")
    return READERS[kind]
