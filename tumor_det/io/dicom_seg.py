"""DICOM Segmentation (SEG) objects of a DICOM series' prediction, written with highdicom.

A SEG references its source series (Study, Series and SOP Instance UIDs of every slice, the Frame
of Reference) and copies the patient and study, so PACS viewers, 3D Slicer (QuantitativeReporting)
and OHIF open it over the scan. One frame per source slice and segment: frame ``k`` is the mask of
``series.files[k]``, i.e. ``seg[:, :, k].T`` (voxel (i, j, k) is column i, row j of the slice).

* :func:`write_dicom_seg`: BINARY, one segment per tumor class (segment number = class index +
  1, label = the class name), from a label map whose voxels are segment numbers;
* :func:`write_probability_seg`: FRACTIONAL (PROBABILITY, 0-255), one segment holding a
  probability map in [0, 1].

Segments are "Neoplasm" (SCT 108369006) in the category "Morphologically Abnormal Structure"
(SCT 49755003), anatomic region "Brain", algorithm type AUTOMATIC, identified as
``tumor-det`` (family "Artificial Intelligence", version ``tumor_det.__version__``); the content
qualification is RESEARCH. Empty frames are left out (all of them are kept when nothing was
found, so "no tumor" is a readable SEG too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tumor_det import __version__
from tumor_det.io.base import InputError
from tumor_det.io.dicom import DicomSeries
from tumor_det.utils.atomic import atomic_path

import numpy as np

ALGORITHM_NAME = "tumor-det"
MANUFACTURER = "tumor-det"
MODEL_NAME = "tumor-det Mask R-CNN"
SERIES_NUMBER_OFFSET = 1000  # the SEG's series number: the source's + this


def algorithm_identification(parameters: Mapping[str, str] | None = None):
    """highdicom's ``AlgorithmIdentificationSequence`` of this package."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence, version=__version__,
        parameters=dict(parameters) if parameters else None)


def segment_descriptions(labels: Sequence[str], parameters: Mapping[str, str] | None = None):
    """One AUTOMATIC "Neoplasm" segment description per label, numbered from 1."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = algorithm_identification(parameters)
    return [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=[codes.SCT.Brain])
        for n, label in enumerate(labels, start=1)
    ]


def source_datasets(series: DicomSeries) -> list:
    """The series' slice headers (no pixels) in volume order."""
    import pydicom

    if not series.files or len(series.files) != series.data.shape[2]:
        raise InputError("a DICOM-SEG needs the DICOM series' slice files")
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]


def _frames(seg: np.ndarray) -> np.ndarray:
    """Volume grid (column, row, slice) -> frames (slice, row, column)."""
    return np.ascontiguousarray(np.asarray(seg).transpose(2, 1, 0))


def _write(segmentation_type: str, frames: np.ndarray, path: Path, series: DicomSeries,
           descriptions: list, description: str) -> Path:
    import highdicom as hd

    sources = source_datasets(series)
    if frames.shape[1:] != (int(sources[0].Rows), int(sources[0].Columns)):
        raise ValueError(f"segmentation frames {frames.shape[1:]} do not match the series' "
                         f"{sources[0].Rows}x{sources[0].Columns} slices")
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=segmentation_type,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        device_serial_number="none",
        content_description=description,
        content_label="TUMOR",
        series_description=description,
        content_qualification="RESEARCH",
        omit_empty_frames=bool(frames.any()),
    )
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return Path(path)


def write_dicom_seg(labels: np.ndarray, path: Path, series: DicomSeries,
                    segment_labels: Sequence[str],
                    parameters: Mapping[str, str] | None = None) -> Path:
    """A BINARY SEG of ``labels`` (the series' grid; 0 background, n = segment ``n``: class
    index + 1) with one segment per entry of ``segment_labels`` (the class names)."""
    labels = np.asarray(labels)
    if labels.shape != series.data.shape:
        raise ValueError(f"label map {labels.shape} is not in the series' grid "
                         f"{series.data.shape}")
    if labels.max(initial=0) > len(segment_labels):
        raise ValueError(f"label {labels.max()} has no segment ({len(segment_labels)} given)")
    return _write("BINARY", _frames(labels.astype(np.uint16)), path, series,
                  segment_descriptions(segment_labels, parameters), "tumor-det tumor segmentation")


def write_probability_seg(probabilities: np.ndarray, path: Path, series: DicomSeries,
                          label: str = "tumor probability",
                          parameters: Mapping[str, str] | None = None) -> Path:
    """A FRACTIONAL (PROBABILITY) SEG with one segment: ``probabilities`` in [0, 1] in the
    series' grid (stored as 0-255)."""
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.shape != series.data.shape:
        raise ValueError(f"probability map {probabilities.shape} is not in the series' grid "
                         f"{series.data.shape}")
    return _write("FRACTIONAL", _frames(np.clip(probabilities, 0.0, 1.0)), path, series,
                  segment_descriptions([label], parameters), "tumor-det tumor probability")
