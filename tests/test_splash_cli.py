"""tools/splash.py end to end (subprocess) on DICOM, PNG, NIfTI, a DICOM series and a video.

The quick config with random weights (``MODEL.WEIGHTS ""``) at 64 px and a zero confidence
threshold gives detections; the checks are about files, geometry and bookkeeping.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from pycocotools import mask as mask_util
from pydicom.data import get_testdata_file
from test_splash import make_dicom_series

REPO = Path(__file__).resolve().parents[1]
ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
FAST = ["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]


def splash(*args: str, opts: list[str] = FAST) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "tools/splash.py", "--allow-untrained", *args, *opts],
                          cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def rows(out: Path) -> dict[str, dict]:
    with (out / "results.csv").open() as f:
        return {Path(r["file"]).name: r for r in csv.DictReader(f)}


def grey16(path: Path) -> Path:
    image = np.full((64, 80), 800, np.uint16)
    image[20:40, 30:50] = 52000
    assert cv2.imwrite(str(path), image)
    return path


def test_nonexistent_input_is_a_one_line_error(tmp_path):
    res = splash("--input", str(tmp_path / "missing.png"), "--output", str(tmp_path / "o"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"splash.py: error: --input {tmp_path / 'missing.png'}: " \
        "no such file or folder"
    res = splash("--input", str(grey16(tmp_path / "a.png")), "--weights", "nope.pth")
    assert res.returncode == 2 and "nope.pth" in res.stderr and "Traceback" not in res.stderr
    res = splash("--input", str(tmp_path / "a.png"), "MODEL.NOT_A_KEY", "1", opts=[])
    assert res.returncode == 2 and "MODEL.NOT_A_KEY" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_dicom_and_16bit_png(tmp_path):
    out = tmp_path / "out"
    dcm = get_testdata_file("MR_small.dcm")
    png = grey16(tmp_path / "grey16.png")
    res = splash("--input", dcm, str(png), "--output", str(out), "--confidence-threshold", "0",
                 "--batch-size", "2")
    assert res.returncode == 0, res.stderr
    for stem, shape in (("MR_small", (64, 64)), ("grey16", (64, 80))):
        splash_img = cv2.imread(str(out / f"{stem}_splash.png"))
        mask = cv2.imread(str(out / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(out / f"{stem}_overlay.png"))
        assert splash_img.shape == (*shape, 3) and mask.shape == shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert min(overlay.shape[:2]) >= 256
    table = rows(out)
    dicom_row, png_row = table["MR_small.dcm"], table["grey16.png"]
    assert int(dicom_row["tumors"]) > 0  # random weights, threshold 0: some detections
    area = (cv2.imread(str(out / "MR_small_mask.png"), cv2.IMREAD_UNCHANGED) > 0).sum()
    assert int(dicom_row["area_px"]) == area
    assert float(dicom_row["area_mm2"]) == pytest.approx(area * 0.3125 * 0.3125, abs=0.01)
    assert png_row["area_mm2"] == "" and png_row["volume_ml"] == ""
    records = json.loads((out / "results.json").read_text())
    assert {Path(r["file_name"]).name for r in records} == {"MR_small.dcm", "grey16.png"}
    for r in records:
        assert r["category_id"] == 1 and len(r["bbox"]) == 4 and 0 <= r["score"] <= 1
        assert isinstance(r["segmentation"]["counts"], str)
    dicom_masks = [mask_util.decode({**r["segmentation"],
                                     "counts": r["segmentation"]["counts"].encode()})
                   for r in records if r["file_name"] == dcm]
    np.testing.assert_array_equal(np.any(dicom_masks, axis=0) * 255,
                                  cv2.imread(str(out / "MR_small_mask.png"), 0))
    assert "processed" in res.stdout and "tumors found" in res.stdout
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_folder_with_corrupt_files_and_no_overwrite(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = grey16(folder / "good.png")
    data = good.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("not an image")
    (folder / "notes.txt").write_text("hello")
    (folder / "fake.dcm").write_bytes(b"\0" * 200)
    (folder / "broken.nii.gz").write_bytes(b"not gzip")
    (folder / "good_mask.png").write_bytes(data)  # an input where good.png's mask would go
    _, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (64, 80, 3),
                                                                    dtype=np.uint8))
    (folder / "cut.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])  # OpenCV decodes it grey
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    res = splash("--input", str(folder), "--output", str(folder), "--confidence-threshold", "0.9")
    assert res.returncode == 0, res.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before
    for name in ("truncated.png", "text.png", "notes.txt", "fake.dcm", "broken.nii.gz",
                 "good.png"):
        assert f"skipped {folder / name}: " in res.stdout, name  # warned about (log)
        assert f"\n{folder / name} " in res.stdout, name  # and listed in the summary
    assert "refusing to overwrite input" in res.stdout
    assert f"skipped {folder / 'cut.jpg'}: truncated image" in res.stdout
    assert f"\n{folder / 'cut.jpg'}  " in res.stdout and "Premature end" not in res.stderr
    table = rows(folder)
    assert set(table) == {"good_mask.png"}
    assert (folder / "good_mask_splash.png").is_file()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("nope")
    res = splash("--input", str(bad), "--output", str(tmp_path / "o2"))
    assert res.returncode == 1 and "x.png" in res.stdout


def test_nifti_volume(tmp_path):
    if not ANATOMICAL.is_file():
        pytest.skip("nibabel's anatomical.nii not installed")
    out = tmp_path / "out"
    res = splash("--input", str(ANATOMICAL), "--output", str(out), "--confidence-threshold", "0",
                 "--batch-size", "8")
    assert res.returncode == 0, res.stderr
    src = nib.load(str(ANATOMICAL))
    mask = nib.load(str(out / "anatomical_mask.nii.gz"))
    assert mask.shape == src.shape
    np.testing.assert_allclose(mask.affine, src.affine)
    np.testing.assert_array_equal(mask.header.get_zooms(), src.header.get_zooms())
    data = np.asanyarray(mask.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
    row = rows(out)["anatomical.nii"]
    voxel_mm3 = float(np.prod(src.header.get_zooms()))
    assert int(row["area_px"]) == int(data.sum())
    assert float(row["volume_ml"]) == pytest.approx(data.sum() * voxel_mm3 / 1000, abs=1e-4)
    if data.any():
        first, last = (int(v) for v in row["slices"].split("-"))
        assert 0 <= first <= last < src.shape[2]
    video = cv2.VideoCapture(str(out / "anatomical_splash.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == src.shape[2]  # one frame per axial slice
    video.release()


def test_dicom_series_folder(tmp_path):
    make_dicom_series(tmp_path / "series", n=3)
    out = tmp_path / "out"
    res = splash("--input", str(tmp_path / "series"), "--output", str(out))
    assert res.returncode == 0, res.stderr
    mask = nib.load(str(out / "series_mask.nii.gz"))
    assert mask.shape == (64, 64, 3)
    assert nib.aff2axcodes(mask.affine) == ("L", "P", "S")
    np.testing.assert_allclose(mask.affine[:3, 3], [83.9063, 91.2, 6.6406], atol=1e-4)
    np.testing.assert_allclose(mask.header.get_zooms(), [0.3125, 0.3125, 2.5], atol=1e-5)
    assert rows(out)["series"]["kind"] == "volume"


def test_video(tmp_path):
    src = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 6.0, (64, 64))
    for i in range(5):
        frame = np.zeros((64, 64, 3), np.uint8)
        cv2.circle(frame, (20 + 5 * i, 32), 10, (200, 200, 200), -1)
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    res = splash("--video-input", str(src), "--output", str(out), "--confidence-threshold", "0",
                 "--batch-size", "3")
    assert res.returncode == 0, res.stderr
    video = cv2.VideoCapture(str(out / "clip_splash.mp4"))
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 64)
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(6.0)
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    video.release()
    assert rows(out)["clip.mp4"]["kind"] == "video"


def test_untrained_model_is_refused_unless_allowed(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    image = str(grey16(tmp_path / "a.png"))
    refused = subprocess.run([sys.executable, "tools/splash.py", "--input", image, "--output",
                              str(tmp_path / "out"), *FAST], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("splash.py: error: no model weights")
    assert "--weights" in lines[0] and "--allow-untrained" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing was predicted or written
    allowed = splash("--input", image, "--output", str(tmp_path / "out"))
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "out" / "results.csv").is_file()


@pytest.mark.slow
def test_dicom_series_gets_a_dicom_seg_and_lesion_outputs(tmp_path):
    import highdicom as hd
    import pydicom

    make_dicom_series(tmp_path / "series", n=3)
    out = tmp_path / "out"
    res = splash("--input", str(tmp_path / "series"), "--output", str(out),
                 "--confidence-threshold", "0", "--single-slice-min-score", "0",
                 "--save-probabilities")
    assert res.returncode == 0, res.stderr
    mask = np.asanyarray(nib.load(str(out / "series_mask.nii.gz")).dataobj).astype(bool)
    assert mask.any()  # random weights, threshold 0
    # instance labels: ids 1..N, one per lesion of series_lesions.csv (by score)
    labels = nib.load(str(out / "series_instances.nii.gz"))
    ids = np.asanyarray(labels.dataobj)
    np.testing.assert_allclose(labels.affine, nib.load(str(out / "series_mask.nii.gz")).affine)
    np.testing.assert_array_equal(ids > 0, mask)
    with (out / "series_lesions.csv").open() as f:
        lesions = list(csv.DictReader(f))
    row = rows(out)["series"]
    assert int(row["tumors"]) == len(lesions) == ids.max()
    assert [int(r["id"]) for r in lesions] == list(range(1, len(lesions) + 1))
    scores = [float(r["score"]) for r in lesions]
    assert scores == sorted(scores, reverse=True)
    assert all(r["class"] == "tumor" and r["category_id"] == "1" for r in lesions)
    for r in lesions:
        assert int(r["voxels"]) == int((ids == int(r["id"])).sum())
    assert sum(float(r["volume_ml"]) for r in lesions) == pytest.approx(
        float(row["volume_ml"]), abs=1e-3)
    assert not (out / "series_classes.nii.gz").exists()  # one class
    # probabilities: float 0-1, >= 0.5 exactly on the mask (nothing dropped here)
    probs = np.asanyarray(nib.load(str(out / "series_probabilities.nii.gz")).dataobj)
    assert probs.dtype == np.float32 and probs.shape == mask.shape
    assert 0 <= probs.min() and probs.max() <= 1
    assert (probs[mask] >= 127 / 255 - 1e-6).all() and (probs[~mask] < 128 / 255).all()
    # the DICOM-SEG: every source slice's frame is the mask of that slice
    files = sorted((tmp_path / "series").iterdir())
    sources = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in files}
    seg = hd.seg.segread(out / "series_seg.dcm")
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 1
    assert seg.get_segment_description(1).segment_label == "tumor"
    depth = {uid: float(ds.ImagePositionPatient[2]) for uid, ds in sources.items()}
    uids = sorted(sources, key=depth.get)  # the volume's slice order
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    for k in range(len(uids)):
        np.testing.assert_array_equal(pixels[k], mask[:, :, k].T)
    assert (out / "series_seg_probabilities.dcm").is_file()


@pytest.mark.slow
def test_ensemble_of_two_class_models_without_dicom_seg(tmp_path):
    from tumor_det.config.config import get_tumor_cfg

    import torch
    from detectron2.modeling import build_model

    two = ["MODEL.ROI_HEADS.NUM_CLASSES", "2"]
    weights = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        weights.append(str(tmp_path / f"fold{seed}.pth"))
        torch.save({"model": build_model(get_tumor_cfg(None, FAST + two)).state_dict()},
                   weights[-1])
    make_dicom_series(tmp_path / "series", n=3)
    out = tmp_path / "out"
    res = splash("--input", str(tmp_path / "series"), "--output", str(out),
                 "--confidence-threshold", "0", "--no-dicom-seg", "--weights", *weights,
                 opts=FAST + two)
    assert res.returncode == 0, res.stderr
    assert "ensemble of 2 models" in res.stdout + res.stderr
    assert not (out / "series_seg.dcm").exists()
    ids = np.asanyarray(nib.load(str(out / "series_instances.nii.gz")).dataobj)
    classes = np.asanyarray(nib.load(str(out / "series_classes.nii.gz")).dataobj)
    np.testing.assert_array_equal(classes > 0, ids > 0)
    assert set(np.unique(classes)) <= {0, 1, 2}  # dataset category ids: class index + 1
    with (out / "series_lesions.csv").open() as f:
        for r in csv.DictReader(f):
            assert set(classes[ids == int(r["id"])]) == {int(r["category_id"])}
