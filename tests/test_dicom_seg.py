"""DICOM-SEG of a DICOM series' prediction: geometry, references and metadata, read back.

A synthetic scan (``synthetic_volume``) is written as an axial MR series by the product's writer
(``write_dicom_series`` of its ``lps_grid``: new UIDs, LPS ``ImagePositionPatient``,
``ImageOrientationPatient`` [1, 0, 0, 0, 1, 0], ``PixelSpacing``; files renamed in shuffled
order), read through the splash reader and predicted with a fake model output that "detects" the
ground-truth lesion (class 0) and a second, made-up lesion (class 1). Every frame of the SEG, read
back by highdicom and by pydicom, must equal the predicted mask of its source slice.
"""

from __future__ import annotations

from pathlib import Path

from tumor_det import __version__
from tumor_det.config.config import get_tumor_cfg
from tumor_det.data.synthetic import synthetic_volume
from tumor_det.evaluation.threshold import with_score_threshold
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io import reader_for
from tumor_det.io.dicom import DicomSeries, lps_grid, write_dicom_series
from tumor_det.io.dicom_seg import write_dicom_seg, write_probability_seg
from tumor_det.io.geometry import Volume, display_slices

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from detectron2.structures import Boxes, Instances
from test_predictor import FAST

SIZE, SLICES = 64, 10


def write_series(folder: Path, volume: np.ndarray, affine: np.ndarray) -> list[Path]:
    """An (x, y, z) RAS volume as a scanner's axial MR series (``lps_grid``: the reader's grid
    is the volume's flipped in x and y); returns the files by z, their names shuffled."""
    files = write_dicom_series(lps_grid(Volume(volume, affine)), folder)
    shuffled = [f.with_name(f"im{(k * 7) % len(files):03d}.dcm") for k, f in enumerate(files)]
    for src, dst in zip(files, shuffled, strict=True):
        src.rename(dst)
    return shuffled


def label_instances(masks: list[np.ndarray], classes: list[int], scores: list[float],
                    shape) -> Instances:
    inst = Instances(shape)
    keep = [i for i, m in enumerate(masks) if m.any()]
    boxes = []
    for i in keep:
        ys, xs = np.nonzero(masks[i])
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor([scores[i] for i in keep], dtype=torch.float32)
    inst.pred_classes = torch.tensor([classes[i] for i in keep], dtype=torch.long)
    inst.pred_masks = torch.from_numpy(np.array([masks[i] for i in keep], bool).reshape(
        -1, *shape))
    return inst


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> tuple[DicomSeries, np.ndarray]:
    volume, labels, affine = synthetic_volume(seed=1, size=SIZE, num_slices=SLICES)
    assert labels.any()
    files = write_series(tmp_path_factory.mktemp("dcm") / "series", volume, affine)
    series = reader_for("dicom_series").read(*sorted(files[0].parent.iterdir()))
    assert isinstance(series, DicomSeries)
    assert [f.name for f in series.files] == [f.name for f in files]  # sorted by position
    # the reader's grid is the written one flipped in x and y (LPS columns and rows)
    np.testing.assert_array_equal(series.data, volume[::-1, ::-1])
    ds = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    return series, labels[::-1, ::-1].astype(bool)


@pytest.fixture(scope="module")
def prediction(scan):
    """predict_volume with a model that outputs the true lesion and a made-up second one."""
    series, labels = scan
    truth, _ = display_slices(Volume(labels, series.affine))
    other = np.zeros_like(truth)
    other[3:6, 5:12, 40:50] = True  # class 1, three slices
    queue = list(range(len(truth)))
    cfg = get_tumor_cfg(None, [*FAST, "MODEL.ROI_HEADS.NUM_CLASSES", "2"])
    predictor = TumorPredictor(with_score_threshold(cfg, 0.5),
                               PredictorOptions(allow_untrained=True))

    def fake(images):
        out = []
        for image in images:
            k = queue.pop(0)
            out.append(label_instances([truth[k], other[k]], [0, 1], [0.9, 0.8],
                                       image.shape[:2]))
        return out

    predictor.run_model = fake
    return predictor.predict_volume(series, batch_size=4)


def test_volume_prediction_is_the_fake_output(scan, prediction):
    series, labels = scan
    assert prediction.num_tumors == 2
    assert [les.class_index for les in prediction.lesions] == [0, 1]
    np.testing.assert_array_equal(prediction.labels == 1, labels)


def read_frames(path: Path, series: DicomSeries, segments: int) -> dict[str, np.ndarray]:
    """SOP Instance UID -> (rows, cols, segments) bool, through pydicom's per-frame items."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    by_uid: dict[str, np.ndarray] = {}
    shared = ds.SharedFunctionalGroupsSequence[0]
    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f
               for f in series.files}
    for item, frame in zip(ds.PerFrameFunctionalGroupsSequence, frames, strict=True):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        source = pydicom.dcmread(sources[uid], stop_before_pixels=True)
        position = item.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in position],
                                   [float(v) for v in source.ImagePositionPatient])
        ident = item if "SegmentIdentificationSequence" in item else shared  # one segment
        segment = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        by_uid.setdefault(uid, np.zeros((*frame.shape, segments), bool))[..., segment - 1] = frame
    return by_uid


def test_binary_seg_matches_the_prediction_slice_by_slice(tmp_path, scan, prediction):
    series, _ = scan
    segments = prediction.lesion_map.class_map({0: 1, 1: 2})
    path = write_dicom_seg(segments, tmp_path / "scan_seg.dcm", series, ["glioma", "other"])
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    expected = {ds.SOPInstanceUID: np.stack([segments[:, :, k].T == n for n in (1, 2)], axis=-1)
                for k, ds in enumerate(sources)}
    assert sum(e.any() for e in expected.values()) >= 3  # several slices with tumor

    # pydicom: each frame's source slice (UID and position), segment and pixels
    frames = read_frames(path, series, 2)
    assert set(frames) == {uid for uid, e in expected.items() if e.any()}  # empty ones left out
    for uid, mask in frames.items():
        np.testing.assert_array_equal(mask, expected[uid])

    # highdicom: the same through its own indexing
    seg = hd.seg.segread(path)
    uids = [ds.SOPInstanceUID for ds in sources]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])
    combined = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    for k, uid in enumerate(uids):
        np.testing.assert_array_equal(pixels[k].astype(bool), expected[uid])
        np.testing.assert_array_equal(combined[k], segments[:, :, k].T)  # segment numbers

    # references and identification
    ds = pydicom.dcmread(path)
    first = sources[0]
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert ds.PatientID == first.PatientID
    (ref,) = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == set(uids)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["glioma", "other"]
    for s in ds.SegmentSequence:
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        (algo,) = s.SegmentationAlgorithmIdentificationSequence
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("tumor-det", __version__)
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Neoplasm"
    assert seg.get_segment_description(1).algorithm_identification[0].AlgorithmName == "tumor-det"


def test_fractional_seg_and_an_empty_prediction(tmp_path, scan):
    series, labels = scan
    probs = np.where(labels, 0.8, 0.1).astype(np.float32)
    path = write_probability_seg(probs, tmp_path / "p.dcm", series)
    ds = pydicom.dcmread(path)
    assert ds.SegmentationType == "FRACTIONAL" and ds.SegmentationFractionalType == "PROBABILITY"
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    frames = read_frames(path, series, 1)  # 0-255: every slice has non-zero probabilities
    for k, uid in enumerate(uids):
        np.testing.assert_array_equal(frames[uid][..., 0], probs[:, :, k].T > 0)
    raw = ds.pixel_array
    assert set(np.unique(raw)) == {round(0.1 * 255), round(0.8 * 255)}
    seg = hd.seg.segread(path)
    got = seg.get_pixels_by_source_instance(uids, segment_numbers=[1],
                                            rescale_fractional=True)[..., 0]
    np.testing.assert_allclose(got, probs.transpose(2, 1, 0), atol=1 / 255)
    # nothing found: a readable SEG with every frame, all empty
    empty = write_dicom_seg(np.zeros(series.data.shape, np.uint8), tmp_path / "e.dcm", series,
                            ["tumor"])
    ds = pydicom.dcmread(empty)
    assert int(ds.NumberOfFrames) == SLICES and not ds.pixel_array.any()


def test_seg_refuses_a_grid_that_is_not_the_series(tmp_path, scan):
    series, _ = scan
    with pytest.raises(ValueError, match="grid"):
        write_dicom_seg(np.zeros((3, 3, 3), np.uint8), tmp_path / "x.dcm", series, ["tumor"])
    with pytest.raises(ValueError, match="no segment"):
        write_dicom_seg(np.full(series.data.shape, 2, np.uint8), tmp_path / "x.dcm", series,
                        ["tumor"])
