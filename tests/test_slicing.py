"""One slicing rule: training preparation and inference see the same slices, pixel for pixel.

A synthetic scan and its label volume are stored in three voxel orientations (same anatomy).
Each is prepared for training (``tumor_det.data.prepare``, every slice kept) and run through
the predictor's volume path (``TumorPredictor.predict_volume``: ``tumor_det.io.load_nifti`` ->
``tumor_det.io.geometry.display_slices`` -> ``TumorPredictor.prepare``); the model's forward pass
is replaced by a recorder of the 8-bit images it is given.
"""

from __future__ import annotations

from pathlib import Path

from tumor_det.config.config import get_tumor_cfg
from tumor_det.data.prepare import PrepareOptions, prepare
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io import load_nifti
from tumor_det.io.geometry import display_slices

import nibabel as nib
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import Boxes, Instances
from PIL import Image

FAST = ["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]
ORIENTATIONS = {"ras": ("R", "A", "S"), "lps": ("L", "P", "S"), "pil": ("P", "I", "L")}


@pytest.fixture(scope="module")
def predictor() -> TumorPredictor:
    torch.manual_seed(0)
    return TumorPredictor(get_tumor_cfg(None, FAST), PredictorOptions(allow_untrained=True))


@pytest.fixture
def seen(predictor, monkeypatch) -> list[np.ndarray]:
    """The 8-bit BGR images the model is given, in order (the model itself finds nothing)."""
    images: list[np.ndarray] = []

    def record(batch: list[np.ndarray]) -> list[Instances]:
        images.extend(image.copy() for image in batch)
        empty = []
        for image in batch:
            inst = Instances(image.shape[:2])
            inst.pred_boxes = Boxes(torch.zeros(0, 4))
            inst.scores = torch.zeros(0)
            inst.pred_classes = torch.zeros(0, dtype=torch.long)
            inst.pred_masks = torch.zeros(0, *image.shape[:2], dtype=torch.bool)
            empty.append(inst)
        return empty

    monkeypatch.setattr(predictor, "run_model", record)
    return images


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """``(image, label)`` NIfTI files of one RAS+ scan stored in each of ORIENTATIONS."""
    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(7)
    shape = (14, 18, 10)
    data = rng.normal(600, 150, shape).astype(np.int16)  # not 8-bit: goes through to_uint8
    labels = np.zeros(shape, np.uint8)
    labels[2:6, 11:16, 3:7] = 1  # the patient's left-ish (low x), anterior (high y)
    labels[9:12, 3:6, 6] = 2
    affine = np.diag([1.25, 0.75, 2.5, 1.0])
    affine[:3, 3] = [-8.0, 3.0, 11.0]
    files = {}
    for name, codes in ORIENTATIONS.items():
        ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                               nib.orientations.axcodes2ornt(codes))
        paths = (root / f"{name}_t1ce.nii.gz", root / f"{name}_seg.nii.gz")
        for array, path in zip((data, labels), paths, strict=True):
            nib.save(nib.Nifti1Image(array, affine).as_reoriented(ornt), path)
        assert nib.aff2axcodes(nib.load(paths[0]).affine) == codes
        files[name] = paths
    return files


def masks_of(coco: dict, image: dict) -> np.ndarray:
    """The union of an image's decoded instance masks."""
    out = np.zeros((image["height"], image["width"]), bool)
    for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
        rle = mask_util.merge(mask_util.frPyObjects(ann["segmentation"], image["height"],
                                                    image["width"]))
        out |= mask_util.decode(rle).astype(bool)
    return out


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_training_and_inference_slices_are_equal(tmp_path, predictor, seen, scans, plane):
    model_views = {}
    for name, (image_path, label_path) in scans.items():
        out = tmp_path / name
        result = prepare(PrepareOptions("nifti", None, out, pairs=[(image_path, label_path)],
                                        keep_negatives=True, axis=plane))
        coco = result.splits["all"]

        seen.clear()
        volume = load_nifti(image_path)
        prediction = predictor.predict_volume(volume, batch_size=3, plane=plane)
        labels, _ = display_slices(load_nifti(label_path), plane)

        assert len(seen) == len(prediction.slices) == len(coco["images"]) == labels.shape[0]
        for entry in coco["images"]:
            k = entry["slice_index"]
            assert entry["file_name"] == f"{name}_{plane}_{k:03d}.png"
            written = np.asarray(Image.open(out / "images" / entry["file_name"]))
            model_input = seen[k]
            assert written.dtype == np.uint8 and model_input.dtype == np.uint8
            assert model_input.shape == (*written.shape, 3)
            for channel in range(3):  # grey repeated to BGR
                np.testing.assert_array_equal(model_input[:, :, channel], written)
            np.testing.assert_array_equal(prediction.slices[k].image, model_input)
            np.testing.assert_array_equal(masks_of(coco, entry), labels[k] > 0)
            assert entry["pixel_spacing"] == pytest.approx(prediction.slices[k].pixel_spacing)
        assert prediction.mask.shape == volume.data.shape
        model_views[name] = np.stack(seen)

    # the stored orientation does not matter: the same anatomy gives the same model inputs
    for name in ("lps", "pil"):
        np.testing.assert_array_equal(model_views[name], model_views["ras"])


def test_radiological_convention_of_the_shared_rule(scans):
    """Anterior at the top and the patient's left on the image's right (axial, any storage)."""
    for _, label_path in scans.values():
        axial, spacing = display_slices(load_nifti(label_path), "axial")
        assert axial.shape == (10, 18, 14) and spacing == pytest.approx((0.75, 1.25))
        rows, cols = np.nonzero(axial[4] == 1)  # x 2..5 of 14 (left), y 11..15 of 18 (anterior)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 6, 8, 11)
        coronal, _ = display_slices(load_nifti(label_path), "coronal")
        rows, cols = np.nonzero(coronal[4] == 2)  # z 6 of 10 (superior: near the top), x 9..11
        assert set(rows) == {3} and (cols.min(), cols.max()) == (2, 4)
