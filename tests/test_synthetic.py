"""The built-in synthetic dataset: deterministic, valid COCO, patient-level splits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.data import synthetic
from tumor_det.data.synthetic import (
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
    iter_synthetic_slices,
    read_synthetic,
    synthetic_slice,
    synthetic_volume,
)
from tumor_det.data.validation import mask_to_polygons

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.structures import polygons_to_bitmask
from PIL import Image
from pycocotools.coco import COCO

SMALL = {"num_patients": 8, "slices_per_patient": 3, "size": 128}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synth") / "a"
    summary = generate_synthetic_dataset(folder, seed=0, **SMALL)
    assert set(summary) == {"train", "val", "test"}
    assert sum(s["images"] for s in summary.values()) == 24
    return folder


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> Path:
    """A datasets root holding the default synthetic dataset (150 slices of 256 px)."""
    root = tmp_path_factory.mktemp("datasets")
    ensure_synthetic_dataset(root / "tumor_synth")
    return root


def test_deterministic(small, tmp_path):
    generate_synthetic_dataset(tmp_path / "b", seed=0, **SMALL)
    generate_synthetic_dataset(tmp_path / "c", seed=1, **SMALL)
    a, b, c = _files(small), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert a["images/synth000_0.png"] != c["images/synth000_0.png"]
    assert a["annotations/train.json"] != c["annotations/train.json"]


def test_polygons_decode_to_masks(small):
    masks = {f"{s.patient_id}_{s.index}.png": s.masks for s in iter_synthetic_slices(**SMALL)}
    checked = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(small / "annotations" / f"{split}.json"))
        assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [(1, "tumor")]
        for image in coco.loadImgs(coco.getImgIds()):
            assert image["pixel_spacing"] == [1.0, 1.0] and image["width"] == 128
            assert (small / "images" / image["file_name"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            truth = masks[image["file_name"]]
            assert len(anns) == len(truth)
            for ann, mask in zip(anns, truth, strict=True):
                decoded = coco.annToMask(ann).astype(bool)
                iou = (decoded & mask).sum() / (decoded | mask).sum()
                assert iou > 0.95, (image["file_name"], iou)
                assert np.array_equal(decoded, mask), image["file_name"]  # pixel for pixel
                assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
                ys, xs = np.nonzero(mask)
                assert ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
                checked += 1
    assert checked > 5


def test_read_synthetic_yields_writer_samples():
    """The generator hands the writer the same Sample objects as the format readers."""
    samples = list(read_synthetic(num_patients=2, slices_per_patient=2, size=64, seed=0))
    slices = list(iter_synthetic_slices(2, 2, 64, 0))
    assert [s.file_name for s in samples] == ["synth000_0.png", "synth000_1.png",
                                              "synth001_0.png", "synth001_1.png"]
    for sample, item in zip(samples, slices, strict=True):
        assert (sample.patient_id, sample.width, sample.height) == (item.patient_id, 64, 64)
        assert sample.extra == {"pixel_spacing": [1.0, 1.0], "slice_index": item.index}
        assert np.array_equal(sample.pixels(), item.image)
        assert len(sample.instances) == len(item.masks)
        assert all(np.array_equal(i.mask, m) for i, m in zip(sample.instances, item.masks,
                                                                strict=True))


def test_polygon_rule_round_trips_synthetic_lesions():
    """validation.mask_to_polygons outlines decode to the lesion masks, pixel for pixel, with
    pycocotools (what the COCO evaluator uses) and Detectron2 (what training uses)."""
    checked = 0
    for item in iter_synthetic_slices(num_patients=6, slices_per_patient=3, size=128, seed=5):
        for mask in item.masks:
            polygons, holes = mask_to_polygons(mask)
            assert holes == 0 and all(len(p) >= 6 for p in polygons)
            rle = mask_util.merge(mask_util.frPyObjects(polygons, 128, 128))
            assert np.array_equal(mask_util.decode(rle).astype(bool), mask)
            d2 = polygons_to_bitmask([np.asarray(p) for p in polygons], 128, 128)
            assert np.array_equal(d2, mask)
            checked += 1
    assert checked >= 8


def test_written_images_are_the_generated_pixels(small):
    for item in iter_synthetic_slices(**SMALL):
        path = small / "images" / f"{item.patient_id}_{item.index}.png"
        assert np.array_equal(np.asarray(Image.open(path)), item.image)


def test_tumor_free_slices_have_no_annotations(default_root):
    total = free = 0
    for split in ("train", "val", "test"):
        data = json.loads((default_root / "tumor_synth" / "annotations" / f"{split}.json")
                          .read_text())
        annotated = {a["image_id"] for a in data["annotations"]}
        total += len(data["images"])
        free += sum(im["id"] not in annotated for im in data["images"])
    assert total == 150
    assert 0.1 <= free / total <= 0.35
    image, masks = synthetic_slice(np.random.default_rng(3), size=96, num_tumors=0)
    assert image.dtype == np.uint8 and image.shape == (96, 96) and masks == []


def test_patient_level_split(default_root):
    seen: dict[str, str] = {}
    names = set()
    for split in ("train", "val", "test"):
        data = json.loads((default_root / "tumor_synth" / "annotations" / f"{split}.json")
                          .read_text())
        assert data["images"], split
        for image in data["images"]:
            assert seen.setdefault(image["patient_id"], split) == split
            assert image["file_name"].startswith(image["patient_id"] + "_")
            names.add(image["file_name"])
    assert len(seen) == 30 and len(names) == 150


def test_registered_dataset_loads(default_root):
    from tumor_det.data import register_all

    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = register_all(default_root)
    assert {"tumor_synth_train", "tumor_synth_val", "tumor_synth_test"} <= set(names)
    records = DatasetCatalog.get("tumor_synth_train")
    assert len(records) == 105
    assert MetadataCatalog.get("tumor_synth_train").thing_classes == ["tumor"]
    anns = [a for r in records for a in r.get("annotations", [])]
    assert anns and all(a["category_id"] == 0 for a in anns)
    assert all(len(p) >= 6 for a in anns for p in a["segmentation"])
    assert any(not r.get("annotations") for r in records)


def test_lesion_sizes_vary(default_root):
    areas = []
    for split in ("train", "val", "test"):
        data = json.loads((default_root / "tumor_synth" / "annotations" / f"{split}.json")
                          .read_text())
        areas += [a["area"] for a in data["annotations"]]
    radii = np.sqrt(np.array(areas) / np.pi)
    assert radii.min() < 8 and radii.max() > 25
    assert np.percentile(radii, 75) > 1.5 * np.percentile(radii, 25)


def test_synthetic_slice_tumor_count():
    rng = np.random.default_rng(0)
    image, masks = synthetic_slice(rng, size=128, num_tumors=2)
    assert image.shape == (128, 128) and len(masks) == 2
    assert all(m.dtype == bool and m.shape == (128, 128) and m.any() for m in masks)
    assert not (masks[0] & masks[1]).any()


def test_train_json_is_written_last(tmp_path, monkeypatch):
    """Its presence means "complete" to ensure_synthetic_dataset's callers."""
    from tumor_det.data import prepare

    written = []
    real = prepare.write_json
    monkeypatch.setattr(prepare, "write_json",
                        lambda path, obj: (written.append(Path(path).name), real(path, obj)))
    summary = generate_synthetic_dataset(tmp_path / "d", num_patients=3, slices_per_patient=2,
                                         size=64)
    assert written == ["test.json", "val.json", "train.json"]
    assert [s["patients"] for s in summary.values()] == [1, 1, 1]
    assert sum(s["images"] for s in summary.values()) == 6  # tumor-free slices kept


def test_a_failed_image_write_is_an_error(tmp_path, monkeypatch):
    from tumor_det.data import prepare

    real = prepare.write_image

    def disk_full_at_second(sample, dest):
        if sample.file_name == "synth000_1.png":
            raise OSError(28, "No space left on device")
        real(sample, dest)

    monkeypatch.setattr(prepare, "write_image", disk_full_at_second)
    with pytest.raises(OSError, match="synth000_1.png: cannot write the image"):
        generate_synthetic_dataset(tmp_path / "d", num_patients=1, slices_per_patient=2,
                                   size=64, splits=(1, 0, 0))


def test_ensure_is_safe_when_racing(tmp_path, monkeypatch):
    barrier = threading.Barrier(2, timeout=30)
    real = synthetic.generate_synthetic_dataset

    def small_and_simultaneous(folder, **kwargs):
        real(folder, num_patients=3, slices_per_patient=2, size=64)
        barrier.wait()  # both have generated; both try to rename

    monkeypatch.setattr(synthetic, "generate_synthetic_dataset", small_and_simultaneous)
    folder = tmp_path / "tumor_synth"
    errors: list[BaseException] = []

    def call():
        try:
            assert ensure_synthetic_dataset(folder) == folder
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (folder / "annotations" / "train.json").is_file()
    assert len(list((folder / "images").glob("*.png"))) == 6
    assert [p.name for p in tmp_path.iterdir()] == ["tumor_synth"]  # no temp folders left


def test_synthetic_volume():
    volume, labels, affine = synthetic_volume(seed=0)
    assert volume.shape == labels.shape == (128, 128, 24)
    assert volume.dtype == np.int16 and labels.dtype == np.uint8
    np.testing.assert_allclose(np.diag(affine), [1, 1, 2, 1])
    np.testing.assert_allclose(affine[:3, 3], -np.array([63.5, 63.5, 23.0]))
    assert set(np.unique(labels)) == {0, 1}
    per_slice = labels.sum(axis=(0, 1))
    assert (per_slice > 0).sum() >= 4
    assert volume[labels > 0].mean() > 0 and volume.max() > 500
    again, _, _ = synthetic_volume(seed=0)
    assert np.array_equal(volume, again)
