"""Every validation rule has a failing input with a message naming the item and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.data.prepare import PrepareOptions, prepare
from tumor_det.data.records import Instance, Issues
from tumor_det.data.validation import clean_polygon, components, mask_to_polygons

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image
from scipy import ndimage


def test_polygon_with_fewer_than_3_points_is_skipped():
    issues = Issues()
    assert clean_polygon([1, 5, 5], [1, 5, 5], 10, 10, "a.png region 0", issues) is None
    assert issues.skipped == [("a.png region 0",
                               "polygon has 2 distinct point(s), needs at least 3")]


def test_zero_area_polygon_is_skipped():
    issues = Issues()
    assert clean_polygon([1, 2, 3], [1, 2, 3], 10, 10, "b.png region 1", issues) is None
    assert issues.skipped[0][0] == "b.png region 1"
    assert issues.skipped[0][1].startswith("zero-area polygon")


def test_self_intersecting_polygon_is_repaired_with_a_warning():
    issues = Issues()
    bowtie = clean_polygon([0, 10, 10, 0], [0, 10, 0, 10], 20, 20, "c.png region 0", issues)
    assert len(bowtie) == 2 and not issues.skipped
    assert "Self-intersection" in issues.warnings[0][1] and "repaired" in issues.warnings[0][1]
    area = mask_util.area(mask_util.merge(mask_util.frPyObjects(bowtie, 20, 20)))
    assert 40 <= area <= 60  # two triangles of 25 px each


def test_points_outside_the_image_are_clipped_with_a_warning():
    issues = Issues()
    polygons = clean_polygon([-5, 30, 30, -5], [2, 2, 8, 8], 20, 10, "d.png region 0", issues)
    assert np.asarray(polygons[0]).reshape(-1, 2)[:, 0].tolist() == [0, 20, 20, 0]
    assert issues.warnings == [("d.png region 0", "4 polygon point(s) outside the 20x10 image "
                                                  "clipped to its border")]


def test_components_are_8_connected_and_polygons_exact():
    mask = np.zeros((30, 30), bool)
    mask[2:6, 2:6] = True
    mask[6, 6] = True  # diagonal neighbour: same component
    mask[20:25, 10:28] = True
    parts = components(mask)
    assert [p.sum() for p in parts] == [90, 17]
    rng = np.random.default_rng(0)
    for _ in range(20):
        seeds = rng.random((40, 50)) > 0.97
        blob = ndimage.binary_fill_holes(ndimage.binary_dilation(seeds, iterations=2))
        polygons, holes = mask_to_polygons(blob)
        decoded = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, 40, 50)))
        assert holes == 0 and np.array_equal(decoded.astype(bool), blob)


def _coco_fixture(tmp_path: Path) -> Path:
    """A COCO file with one problem per annotation/image (see the asserts)."""
    rng = np.random.default_rng(0)
    for name in ("good.png", "dup.png", "nosize.png"):
        Image.fromarray(rng.integers(0, 255, (40, 60), np.uint8)).save(tmp_path / name)
    Image.fromarray(rng.integers(0, 255, (40, 60), np.uint8)).save(tmp_path / "trunc.png")
    data = (tmp_path / "trunc.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    mask = np.zeros((40, 60), np.uint8)
    mask[5:15, 10:30] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    compressed = {"size": [40, 60], "counts": rle["counts"].decode()}
    flat = mask.ravel(order="F")  # uncompressed RLE: run lengths, column-major, from 0s
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
    uncompressed = {"size": [40, 60], "counts": np.diff(np.concatenate([[0], changes])).tolist()}
    square = [[10, 5, 30, 5, 30, 15, 10, 15]]
    coco = {
        "categories": [{"id": 1, "name": "tumor"}],
        "images": [
            {"id": 1, "file_name": "good.png", "width": 60, "height": 40},
            {"id": 2, "file_name": "dup.png", "width": 60, "height": 40},
            {"id": 3, "file_name": "dup.png", "width": 60, "height": 40},
            {"id": 4, "file_name": "nosize.png"},
            {"id": 5, "file_name": "trunc.png", "width": 60, "height": 40},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": compressed,
             "bbox": [10, 5, 20, 10], "area": 1},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": uncompressed,
             "bbox": [0, 0, 5, 5]},
            {"id": 3, "image_id": 1, "category_id": 7, "segmentation": square},
            {"id": 4, "image_id": 2, "category_id": 1, "segmentation": square},
            {"id": 5, "image_id": 4, "category_id": 1, "segmentation": square},
            {"id": 6, "image_id": 4, "category_id": 1,
             "segmentation": {"size": [40, 60], "counts": [2400]}},
            {"id": 7, "image_id": 99, "category_id": 1, "segmentation": square},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def test_coco_validation_rules(tmp_path):
    result = prepare(PrepareOptions("coco", _coco_fixture(tmp_path), tmp_path / "out"))
    coco = result.splits["all"]
    assert [i["file_name"] for i in coco["images"]] == ["good.png", "dup.png", "nosize.png"]
    assert coco["images"][2]["width"] == 60 and coco["images"][2]["height"] == 40
    anns = coco["annotations"]
    assert [a["area"] for a in anns] == [200.0, 200.0, 200.0, 200.0]  # recomputed
    assert all(a["bbox"] == [10.0, 5.0, 20.0, 10.0] for a in anns)
    skipped = {item: reason for item, reason in result.issues.skipped}
    warnings = [f"{item}: {message}" for item, message in result.issues.warnings]
    assert "category mismatch: category_id 7 is not in categories [1]" in \
        skipped["instances.json annotation 3 (good.png)"]
    assert skipped["instances.json image 3 (dup.png)"] == "duplicate file name or image id"
    assert "unreadable or truncated image trunc.png" in \
        skipped["instances.json image 5 (trunc.png)"]
    assert "image_id 99 is not in 'images'" in skipped["instances.json annotation 7"]
    assert "empty mask" in skipped["instances.json annotation 6 (nosize.png)"]
    assert any("bbox [0, 0, 5, 5] differs from the mask's [10.0, 5.0, 20.0, 10.0]" in w
               for w in warnings)
    assert any("image 4 (nosize.png): missing image size, read from the file: 60x40" in w
               for w in warnings)
    # the RLE annotations stay pixel-exact through the default polygon output
    mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(anns[1]["segmentation"], 40, 60)))
    assert mask[5:15, 10:30].all() and mask.sum() == 200


def test_rle_output_keeps_rle_and_holes(tmp_path):
    ring = np.zeros((20, 20), bool)
    ring[4:16, 4:16] = True
    ring[8:12, 8:12] = False
    issues = Issues()
    from tumor_det.data.coco_io import build_annotation
    polygon = build_annotation(Instance(mask=ring), 20, 20, "polygon", "ring", issues)
    assert polygon["area"] == ring.sum() and "1 hole(s) filled" in issues.warnings[0][1]
    rle = build_annotation(Instance(mask=ring), 20, 20, "rle", "ring", issues)
    decoded = mask_util.decode({"size": rle["segmentation"]["size"],
                                "counts": rle["segmentation"]["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), ring)


@pytest.mark.parametrize("content", ["{broken", '{"images": 3}'])
def test_unusable_coco_file_fails_clearly(tmp_path, content):
    from tumor_det.data.records import DatasetError

    (tmp_path / "x.json").write_text(content)
    with pytest.raises(DatasetError, match="x.json"):
        prepare(PrepareOptions("coco", tmp_path / "x.json", tmp_path / "out"))
