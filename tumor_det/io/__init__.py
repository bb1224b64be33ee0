"""Read inputs and write masks: one reader/writer per format under one contract.

:mod:`~tumor_det.io.base` states the contract (what ``read`` returns, what ``write_seg``
takes); :mod:`~tumor_det.io.image2d`, :mod:`~tumor_det.io.dicom`, :mod:`~tumor_det.io.nifti`
and :mod:`~tumor_det.io.video` implement it; :func:`reader_for` picks one by kind or file name
and :func:`expand_inputs` (:mod:`~tumor_det.io.sources`) turns ``--input`` arguments into
sources. Nothing here knows about the model.
"""

from tumor_det.io.base import Image2D, InputError, ReaderWriter, file_stem
from tumor_det.io.dicom import load_dicom_series, read_dicom
from tumor_det.io.image2d import is_truncated, open_complete, read_image
from tumor_det.io.nifti import load_nifti, write_nifti_mask
from tumor_det.io.registry import KINDS_2D, READERS, kind_of, reader_for
from tumor_det.io.sources import Source, UsageError, expand_inputs
from tumor_det.io.video import Video, open_video

__all__ = [
    "KINDS_2D", "READERS", "Image2D", "InputError", "ReaderWriter", "Source", "UsageError",
    "Video", "expand_inputs", "file_stem", "is_truncated", "kind_of", "load_dicom_series",
    "load_nifti", "open_complete", "open_video", "read_dicom", "read_image", "reader_for",
    "write_nifti_mask",
]
