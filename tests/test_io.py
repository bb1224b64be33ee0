"""Readers and writers under one contract, the registry, ``batched`` and results.json records."""

from __future__ import annotations

import logging
from pathlib import Path

from tumor_det.inference.predictor import TumorPrediction
from tumor_det.io import (
    READERS,
    Image2D,
    InputError,
    Video,
    is_truncated,
    kind_of,
    load_nifti,
    reader_for,
)
from tumor_det.io.dicom import lps_grid, write_dicom_series
from tumor_det.io.geometry import Volume
from tumor_det.splash.writers import coco_records
from tumor_det.utils.batching import batched

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from detectron2.structures import Boxes, Instances
from pycocotools import mask as mask_util
from pydicom.data import get_testdata_file
from test_splash import make_dicom_series


def test_batched_groups_in_order_with_a_short_last_batch():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 2)) == []
    assert [len(b) for b in batched(np.zeros((5, 2, 2)), 2)] == [2, 2, 1]  # slices of a stack
    with pytest.raises(ValueError):
        list(batched([1], 0))


def test_registry_picks_a_reader_by_name_or_preamble(tmp_path):
    dicom_without_suffix = tmp_path / "IM0001"
    pydicom.dcmread(get_testdata_file("MR_small.dcm")).save_as(dicom_without_suffix)
    expected = {"a.nii.gz": "nifti", "a.NII": "nifti", "a.PNG": "image", "a.jpeg": "image",
                "a.tif": "image", "a.mp4": "video", "a.dcm": "dicom", "IM0001": "dicom",
                "a.txt": None}
    for name, kind in expected.items():
        (tmp_path / name).touch(exist_ok=True)
        assert kind_of(tmp_path / name) == kind, name
    assert reader_for(tmp_path / "a.nii.gz") is READERS["nifti"] is reader_for("nifti")
    with pytest.raises(KeyError):
        reader_for(tmp_path / "a.txt")


def jpeg(path: Path, shape=(48, 64)) -> Path:
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    return path


def test_2d_reader_contract_and_truncated_images(tmp_path):
    good = jpeg(tmp_path / "good.jpg")
    image = READERS["image"].read(good)
    assert isinstance(image, Image2D) and image.pixels.shape == (48, 64, 3)
    assert not image.rgb and image.spacing is None
    grey16 = tmp_path / "grey16.png"
    assert cv2.imwrite(str(grey16), np.full((5, 7), 40000, np.uint16))
    assert READERS["image"].read(grey16).pixels.dtype == np.uint16
    data = good.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(cut)) is not None  # OpenCV alone would decode it, grey-filled
    assert is_truncated(cut) and not is_truncated(good)
    with pytest.raises(InputError, match="^truncated image$"):
        READERS["image"].read(cut)
    (tmp_path / "text.png").write_text("not an image")
    assert not is_truncated(tmp_path / "text.png")
    with pytest.raises(InputError, match="unreadable or corrupt image"):
        READERS["image"].read(tmp_path / "text.png")
    mask = np.zeros((48, 64), bool)
    mask[3:9, 10:20] = True
    out = READERS["image"].write_seg(mask, tmp_path / "m.png", image)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), mask * 255)


def test_dicom_file_reader_gives_spacing():
    pixels, rgb, spacing = READERS["dicom"].read(Path(get_testdata_file("MR_small.dcm")))
    assert pixels.shape == (64, 64) and not rgb and spacing == (0.3125, 0.3125)


def test_nifti_reader_writer_round_trip_keeps_grid_affine_and_header(tmp_path):
    affine = np.array([[0, 0, -2.0, 5], [-1.0, 0, 0, 1], [0, 1.5, 0, 2], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, affine)
    img.header.set_slope_inter(2.0, 1.0)
    nib.save(img, tmp_path / "scan.nii.gz")
    volume = READERS["nifti"].read(tmp_path / "scan.nii.gz")
    assert isinstance(volume, Volume) and volume.data.shape == (4, 5, 6)
    np.testing.assert_allclose(volume.data, data * 2.0 + 1.0)  # scaling applied
    assert volume.spacing == pytest.approx((1.0, 1.5, 2.0))
    assert volume.voxel_volume_mm3 == pytest.approx(3.0)
    mask = volume.data > 100
    out = READERS["nifti"].write_seg(mask, tmp_path / "scan_mask.nii.gz", volume)
    back = nib.load(out)
    assert back.get_data_dtype() == np.uint8 and back.shape == data.shape
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), mask)  # no scaling left
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_allclose(back.header.get_zooms(), img.header.get_zooms())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic


def test_nifti_4d_channels_and_2d(tmp_path, caplog):
    four_d = np.stack([np.zeros((3, 4, 5)), np.ones((3, 4, 5))], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(four_d, np.eye(4)), tmp_path / "4d.nii")
    with caplog.at_level(logging.WARNING, logger="tumor_det.io.nifti"):
        assert load_nifti(tmp_path / "4d.nii").data.max() == 0  # the first volume, warned
    assert "first volume" in caplog.text
    assert load_nifti(tmp_path / "4d.nii", channel=1).data.min() == 1
    with pytest.raises(InputError, match="no channel 2"):
        load_nifti(tmp_path / "4d.nii", channel=2)
    nib.save(nib.Nifti1Image(np.ones((3, 4), np.float32), np.eye(4)), tmp_path / "2d.nii")
    assert load_nifti(tmp_path / "2d.nii").data.shape == (3, 4, 1)
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="unreadable NIfTI"):
        load_nifti(tmp_path / "broken.nii.gz")


def test_dicom_series_reads_a_volume_and_writes_nifti(tmp_path):
    make_dicom_series(tmp_path / "s", n=3)
    files = sorted((tmp_path / "s").iterdir())
    volume = READERS["dicom_series"].read(*files)
    assert volume.data.shape == (64, 64, 3) and volume.header is None
    out = READERS["dicom_series"].write_seg(volume.data > 500, tmp_path / "m.nii.gz", volume)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    assert int(back.header["qform_code"]) == int(back.header["sform_code"]) == 1  # scanner


def test_nifti_label_maps_and_probability_maps_keep_their_values(tmp_path):
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), affine), tmp_path / "scan.nii.gz")
    volume = READERS["nifti"].read(tmp_path / "scan.nii.gz")
    labels = np.arange(6 * 5 * 4, dtype=np.int32).reshape(6, 5, 4) * 3  # up to 357 > 255
    probs = np.linspace(0, 1, 6 * 5 * 4, dtype=np.float64).reshape(6, 5, 4)
    for name, data, dtype in (("labels", labels, np.uint16), ("small", labels % 200, np.uint8),
                              ("probs", probs, np.float32), ("mask", labels > 50, np.uint8)):
        out = READERS["nifti"].write_seg(data, tmp_path / f"{name}.nii.gz", volume)
        back = nib.load(out)
        assert back.get_data_dtype() == dtype, name
        np.testing.assert_array_equal(np.asanyarray(back.dataobj), data.astype(dtype))
        np.testing.assert_allclose(back.affine, affine)


def test_dicom_series_writer_round_trips_voxels_and_affine(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 3000, (7, 6, 5)).astype(np.int16)
    axial = np.diag([0.9, 0.9, 2.5, 1.0])
    axial[:3, 3] = [-3.0, 4.0, 10.0]
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a random rotation (det +1 below)
    oblique = np.eye(4)
    oblique[:3, :3] = (q * np.sign(np.linalg.det(q)))[:, [2, 0, 1]] @ np.diag([0.8, 1.2, 3.0])
    oblique[:3, 3] = [12.5, -7.0, 30.0]
    for name, affine in (("axial", axial), ("oblique", oblique)):
        files = write_dicom_series(Volume(data, affine), tmp_path / name)
        back = READERS["dicom_series"].read(*sorted(files, reverse=True))
        np.testing.assert_array_equal(back.data, data)
        np.testing.assert_allclose(back.affine, affine, atol=1e-4)
        ds = pydicom.dcmread(files[0])
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.Modality == "MR"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert (ds.Rows, ds.Columns, ds.PixelRepresentation) == (6, 7, 1)
    assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(
        [-12.5, 7.0, 30.0], abs=1e-6)  # LPS
    # a scanner's axial grid: the same scan, rows to posterior, columns to the patient's left
    lps = lps_grid(Volume(data, axial))
    np.testing.assert_array_equal(lps.data, data[::-1, ::-1])
    np.testing.assert_allclose(lps.affine @ [6, 5, 0, 1], axial @ [0, 0, 0, 1])
    ds = pydicom.dcmread(write_dicom_series(lps, tmp_path / "lps")[0])
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="left-handed"):
        write_dicom_series(Volume(data, axial @ np.diag([1, 1, -1, 1])), tmp_path / "x")
    with pytest.raises(FileExistsError):
        write_dicom_series(Volume(data[:, :, :2], axial), tmp_path / "axial")  # IM0003.. stay


def test_dicom_series_remembers_the_file_of_each_slice(tmp_path):
    zs = make_dicom_series(tmp_path / "s", n=4)
    files = sorted((tmp_path / "s").iterdir())  # names are not in position order
    series = READERS["dicom_series"].read(*files)
    depths = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in series.files]
    assert depths == pytest.approx(zs) and sorted(series.files) == files
    for k, path in enumerate(series.files):
        np.testing.assert_array_equal(series.data[:, :, k], pydicom.dcmread(path).pixel_array.T)


def test_video_reader_iterates_frames_once(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (32, 24))
    for i in range(4):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    video = READERS["video"].read(path)
    assert isinstance(video, Video) and video.fps == pytest.approx(5.0)
    frames = list(video)
    assert len(frames) == 4 and frames[0].shape == (24, 32, 3)
    with pytest.raises(InputError, match="cannot open video"):
        READERS["video"].read(tmp_path / "missing.mp4")


# --- results.json -----------------------------------------------------------------------------

def records_before(prediction, image_id, file_name, category_ids=None, **extra) -> list[dict]:
    """results.json records as tumor_det.splash.writers wrote them before instances_to_coco_json."""
    inst = prediction.instances
    records = []
    for box, cls, score, mask in zip(inst.pred_boxes.tensor.numpy(), inst.pred_classes.tolist(),
                                     prediction.scores, inst.pred_masks.numpy(), strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        encoded["counts"] = encoded["counts"].decode("ascii")
        records.append({
            "image_id": image_id, "file_name": file_name, **extra,
            "category_id": (category_ids or {}).get(cls, cls + 1),
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": round(float(score), 5), "segmentation": encoded,
        })
    return records


def prediction_with(n: int) -> TumorPrediction:
    rng = np.random.default_rng(4)
    h, w = 40, 52
    inst = Instances((h, w))
    x0, y0 = rng.uniform(0, 20, n), rng.uniform(0, 15, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(3, 30, n), y0 + rng.uniform(3, 20, n)], 1)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(rng.uniform(0.5, 1, n), dtype=torch.float32)
    inst.pred_classes = torch.tensor([0, 2, 1][:n])
    inst.pred_masks = torch.from_numpy(rng.random((n, h, w)) > 0.7)
    masks = inst.pred_masks
    return TumorPrediction(image=np.zeros((h, w, 3), np.uint8), instances=inst,
                           mask=masks.any(0).numpy() if n else np.zeros((h, w), bool),
                           scores=[float(s) for s in inst.scores],
                           areas_px=[int(a) for a in masks.flatten(1).sum(1)])


@pytest.mark.parametrize("category_ids", [None, {0: 3, 1: 7, 2: 9}])
def test_coco_records_match_the_records_written_before(category_ids):
    pred = prediction_with(3)
    new = coco_records(pred, 5, "scan.nii.gz", category_ids, slice=2)
    old = records_before(pred, 5, "scan.nii.gz", category_ids, slice=2)
    assert len(new) == len(old) == 3
    for a, b in zip(new, old, strict=True):
        assert list(a) == list(b)  # same keys in the same order
        assert a["bbox"] == pytest.approx(b["bbox"], abs=0.011)  # float32 vs float64 width
        assert {k: v for k, v in a.items() if k != "bbox"} == {
            k: v for k, v in b.items() if k != "bbox"}
        assert isinstance(a["segmentation"]["counts"], str)
    assert [r["category_id"] for r in new] == ([1, 3, 2] if category_ids is None else [3, 9, 7])
    assert coco_records(prediction_with(0), 1, "x.png") == []
