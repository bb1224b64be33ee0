"""Mask pairs, Figshare .mat (h5py-written, transposed like MATLAB) and NIfTI round trips."""

from __future__ import annotations

from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.data.prepare import PrepareOptions, prepare
from tumor_det.io.geometry import to_radiological
from tumor_det.io.intensity import to_uint8

import h5py
import nibabel as nib
import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image


def masks_of(coco: dict, image: dict) -> np.ndarray:
    """The union of an image's decoded instance masks, and their count, as a label image."""
    out = np.zeros((image["height"], image["width"]), np.int32)
    for index, ann in enumerate(a for a in coco["annotations"] if a["image_id"] == image["id"]):
        seg = ann["segmentation"]
        if isinstance(seg, list):
            rle = mask_util.merge(mask_util.frPyObjects(seg, image["height"], image["width"]))
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode()}
        out[mask_util.decode(rle).astype(bool)] = index + 1
    return out


def blob_mask(shape, centres, radius=4) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.any([(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2 for r, c in centres], axis=0)


# --- mask pairs -------------------------------------------------------------------------------

@pytest.mark.parametrize("mask_format", ["polygon", "rle"])
def test_mask_pairs_16bit_tiff_and_masks_folder(tmp_path, mask_format):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    image16 = rng.integers(0, 4000, (48, 64)).astype(np.uint16)
    mask = blob_mask((48, 64), [(10, 10), (30, 45)])
    Image.fromarray(image16).save(src / "2.0---p7-i12.tif")  # 16-bit single-channel TIFF
    Image.fromarray(mask.astype(np.uint8) * 255).save(src / "2.0---p7-i12_mask.tif")
    grey8 = rng.integers(0, 255, (48, 64)).astype(np.uint8)
    Image.fromarray(grey8).save(src / "b.png")
    Image.fromarray(blob_mask((48, 64), [(20, 20)]).astype(np.uint8)).save(src / "masks/b.png")
    Image.fromarray(grey8).save(src / "nomask.png")
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(src / "empty.png")
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(src / "empty_mask.png")
    result = prepare(PrepareOptions("masks", src, tmp_path / "out", mask_format=mask_format,
                                    classes="tumor"))
    coco = result.splits["all"]
    by_name = {i["file_name"]: i for i in coco["images"]}
    assert set(by_name) == {"2.0---p7-i12.png", "b.png"}
    tif = by_name["2.0---p7-i12.png"]
    assert (tif["patient_id"], tif["slice_index"], tif["tumor_type"]) == ("p7", 12, "glioma")
    written = np.asarray(Image.open(tmp_path / "out/images/2.0---p7-i12.png"))
    assert written.dtype == np.uint8 and np.array_equal(written, to_uint8(image16))
    labels = masks_of(coco, tif)
    assert labels.max() == 2 and np.array_equal(labels > 0, mask)  # pixel for pixel
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out/images/b.png")), grey8)
    reasons = dict(result.issues.skipped)
    assert "no mask found" in reasons["nomask.png"]
    assert reasons["empty.png"] == "empty mask empty_mask.png"


# --- Figshare .mat ----------------------------------------------------------------------------

def write_mat(path: Path, image: np.ndarray, mask: np.ndarray, label: int, pid: str) -> None:
    """A MATLAB v7.3-like cjdata struct: matrices stored transposed, PID as uint16 codes."""
    with h5py.File(path, "w") as handle:
        group = handle.create_group("cjdata")
        group["image"] = image.T.astype(np.int16)
        group["tumorMask"] = mask.T.astype(np.uint8)
        group["tumorBorder"] = np.zeros((1, 4))
        group["label"] = np.array([[float(label)]])
        group["PID"] = np.array([[ord(c)] for c in pid], np.uint16)


def test_figshare_round_trip_and_cvind_folds(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "figshare"
    src.mkdir()
    truth = {}
    pids = ["100360", "100360", "MR029", "MR029", "5", "6"]
    for n, pid in enumerate(pids, start=1):
        image = rng.integers(-50, 900, (40, 56)).astype(np.int16)  # non-square: catches .T
        mask = blob_mask((40, 56), [(8 + n, 30)])
        write_mat(src / f"{n}.mat", image, mask, label=1 + n % 3, pid=pid)
        truth[f"{n}.png"] = (image, mask, pid)
    (src / "broken.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with h5py.File(src / "cvind.mat", "w") as handle:
        handle["cvind"] = np.array([[1, 1, 2, 2, 3, 3]], float)
    result = prepare(PrepareOptions("figshare", src, tmp_path / "fig", classes="type", folds=3))
    assert "not a readable Figshare" in dict(result.issues.skipped)["broken.mat"]
    assert list(result.splits) == ["fold0", "fold1", "fold2"]
    for fold, coco in result.splits.items():
        for image in coco["images"]:
            pixels, mask, pid = truth[image["file_name"]]
            assert image["patient_id"] == pid and image["height"] == 40
            assert f"fold{(image['figshare_index'] - 1) // 2}" == fold  # cvind's folds
            written = np.asarray(Image.open(tmp_path / "fig/images" / image["file_name"]))
            assert np.array_equal(written, to_uint8(pixels))
            assert np.array_equal(masks_of(coco, image) > 0, mask)
    labels = sorted(a["category_id"] for c in result.splits.values() for a in c["annotations"])
    assert labels == [1, 1, 2, 2, 3, 3]


# --- NIfTI ------------------------------------------------------------------------------------

def ras_volume(shape=(20, 24, 12)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    data = rng.normal(500, 100, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[3:7, 15:20, 4:8] = 1  # on the patient's left (low x), anterior (high y)
    labels[12:14, 5:7, 5] = 4
    return data, labels


def save_reoriented(data, labels, path_img, path_seg, codes=("R", "A", "S")):
    """Save a RAS+ volume in another voxel orientation (same anatomy, different storage)."""
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")),
                                           nib.orientations.axcodes2ornt(codes))
    for array, path in ((data, path_img), (labels, path_seg)):
        image = nib.Nifti1Image(array, affine).as_reoriented(ornt)
        nib.save(image, path)


def test_nifti_orientation_spacing_and_convention(tmp_path):
    data, labels = ras_volume()
    for folder, codes in (("ras", ("R", "A", "S")), ("lps", ("L", "P", "S")),
                          ("odd", ("P", "I", "L"))):
        (tmp_path / folder).mkdir()
        save_reoriented(data, labels, tmp_path / folder / "case1_t1ce.nii.gz",
                        tmp_path / folder / "case1_seg.nii.gz", codes)
    results = {folder: prepare(PrepareOptions("nifti", tmp_path / folder,
                                              tmp_path / f"out_{folder}"))
               for folder in ("ras", "lps", "odd")}
    images = {f: r.splits["all"]["images"] for f, r in results.items()}
    assert [i["slice_index"] for i in images["ras"]] == [4, 5, 6, 7]
    assert results["ras"].issues.dropped_negatives == 8
    first = images["ras"][1]
    assert first["pixel_spacing"] == [1.0, 1.5] and first["patient_id"] == "case1"
    assert (first["height"], first["width"]) == (24, 20)
    for folder in ("lps", "odd"):
        assert [i["file_name"] for i in images[folder]] == [i["file_name"] for i in images["ras"]]
        for ours, ref in zip(images[folder], images["ras"], strict=True):
            a = np.asarray(Image.open(tmp_path / f"out_{folder}/images" / ours["file_name"]))
            b = np.asarray(Image.open(tmp_path / "out_ras/images" / ref["file_name"]))
            assert np.array_equal(a, b)
            assert np.array_equal(masks_of(results[folder].splits["all"], ours),
                                  masks_of(results["ras"].splits["all"], ref))
    # radiological convention: anterior at the top, the patient's left on the image's right
    slice5 = masks_of(results["ras"].splits["all"], first)  # slice 5 holds both lesions
    rows, cols = np.nonzero(slice5 == 1)  # the larger lesion: left (low x), anterior (high y)
    assert rows.max() < 24 // 2 and cols.min() > 20 // 2
    written = np.asarray(Image.open(tmp_path / "out_ras/images" / first["file_name"]))
    assert np.array_equal(written, to_uint8(to_radiological(data[:, :, 5])))
    assert np.array_equal(slice5 > 0, to_radiological(labels[:, :, 5] > 0))


def test_nifti_msd_layout_negatives_and_axes(tmp_path):
    data, labels = ras_volume()
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    four_d = np.stack([data, data * 2], axis=-1)
    nib.save(nib.Nifti1Image(four_d, np.eye(4)), tmp_path / "imagesTr/BRATS_001.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "labelsTr/BRATS_001.nii.gz")
    result = prepare(PrepareOptions("nifti", tmp_path, tmp_path / "msd", axis="coronal",
                                    keep_negatives=True, negative_ratio=1.0, channel=1))
    images = result.splits["all"]["images"]
    positives = [i for i in images
                 if any(a["image_id"] == i["id"] for a in result.splits["all"]["annotations"])]
    assert len(positives) == 7 and len(images) == 14  # 7 tumor slices + 7 negatives
    assert result.issues.dropped_negatives == 24 - 14
    assert images[0]["pixel_spacing"] == [1.0, 1.0] and images[0]["height"] == 12
    only4 = prepare(PrepareOptions("nifti", tmp_path, tmp_path / "msd4", label_values=[4]))
    assert [i["slice_index"] for i in only4.splits["all"]["images"]] == [5]


def test_nibabel_anatomical_volume(tmp_path):
    """A real scan shipped with nibabel (LAS storage), with a generated label volume."""
    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.is_file():
        pytest.skip("nibabel test data not installed")
    image = nib.load(path)
    labels = np.zeros(image.shape, np.uint8)
    labels[10:16, 15:22, 9:13] = 1
    nib.save(nib.Nifti1Image(labels, image.affine), tmp_path / "anat_seg.nii.gz")
    result = prepare(PrepareOptions("nifti", None, tmp_path / "anat",
                                    pairs=[(path, tmp_path / "anat_seg.nii.gz")]))
    images = result.splits["all"]["images"]
    assert len(images) == 4 and images[0]["patient_id"] == "anatomical"
    assert images[0]["pixel_spacing"] == [2.0, 2.0]
    assert (images[0]["height"], images[0]["width"]) == (41, 33)
    assert all(len([a for a in result.splits["all"]["annotations"] if a["image_id"] == i["id"]])
               == 1 for i in images)
