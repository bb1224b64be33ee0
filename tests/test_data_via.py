"""VIA 1.x/2.x -> COCO: masks against independently rasterised polygons, and the 46 real slices."""

from __future__ import annotations

import json
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.data.prepare import PrepareOptions, prepare
from tumor_det.data.records import DatasetError

import numpy as np
import pycocotools.mask as mask_util
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image, ImageDraw


def decode(ann: dict, height: int, width: int) -> np.ndarray:
    seg = ann["segmentation"]
    rle = (mask_util.merge(mask_util.frPyObjects(seg, height, width)) if isinstance(seg, list)
           else {"size": seg["size"], "counts": seg["counts"].encode()})
    return mask_util.decode(rle).astype(bool)


def centre_polygon(xs, ys, height: int, width: int) -> np.ndarray:
    """Pixels whose centre (x + 0.5, y + 0.5) lies inside the polygon (matplotlib)."""
    rows, cols = np.mgrid[0:height, 0:width]
    centres = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    inside = MplPath(np.column_stack([xs, ys])).contains_points(centres)
    return inside.reshape(height, width)


def outline_band(xs, ys, height: int, width: int) -> np.ndarray:
    """Pixels within about one pixel of the outline (PIL line of width 3)."""
    canvas = Image.new("L", (width, height), 0)
    points = list(zip(xs, ys, strict=True))
    ImageDraw.Draw(canvas).line(points + points[:1], fill=1, width=3)
    return np.asarray(canvas).astype(bool)


def assert_matches_polygon(mask: np.ndarray, xs, ys) -> None:
    """Tolerance: IoU > 0.97 and every differing pixel lies on the outline's 1-pixel band."""
    height, width = mask.shape
    theirs = centre_polygon(xs, ys, height, width)
    assert iou(mask, theirs) > 0.97
    assert not ((mask ^ theirs) & ~outline_band(xs, ys, height, width)).any()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def shoelace(xs, ys) -> float:
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def write_jpeg(path: Path, size=(128, 96)) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), np.uint8)).convert("RGB").save(path)


POLYGON = {"name": "polygon", "all_points_x": [20, 60, 90, 70, 30, 20],
           "all_points_y": [20, 15, 40, 80, 70, 20]}


def via_entry(name: str, regions) -> dict:
    return {"filename": name, "size": 1, "file_attributes": {}, "regions": regions}


def test_via1_polygon_matches_independent_rasterisation(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jpeg(src / "1.0---p1-i3.jpg")
    regions = {"0": {"shape_attributes": POLYGON, "region_attributes": {}}}
    (src / "via_region_data.json").write_text(
        json.dumps({"1.0---p1-i3.jpg1": via_entry("1.0---p1-i3.jpg", regions)}))
    result = prepare(PrepareOptions("via", src, tmp_path / "out"))
    coco = result.splits["all"]
    image, ann = coco["images"][0], coco["annotations"][0]
    assert (image["patient_id"], image["slice_index"], image["tumor_type"]) == ("p1", 3,
                                                                                "meningioma")
    # the JPEG is copied byte for byte
    assert (tmp_path / "out/images/1.0---p1-i3.jpg").read_bytes() == \
        (src / "1.0---p1-i3.jpg").read_bytes()
    ours = decode(ann, 96, 128)
    assert_matches_polygon(ours, POLYGON["all_points_x"], POLYGON["all_points_y"])
    assert ann["area"] == ours.sum()
    assert abs(ann["area"] - shoelace(POLYGON["all_points_x"], POLYGON["all_points_y"])) \
        < 0.03 * ann["area"]


def test_via2_list_regions_all_shapes_and_project_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jpeg(src / "a.jpg")
    write_jpeg(src / "extra.jpg")  # in the folder, not in the JSON
    shapes = [
        {"name": "rect", "x": 10, "y": 12, "width": 30, "height": 20},
        {"name": "circle", "cx": 80, "cy": 50, "r": 10},
        {"name": "ellipse", "cx": 40, "cy": 70, "rx": 15, "ry": 8, "theta": 0.5},
        {"name": "polyline", "all_points_x": [100, 120, 110], "all_points_y": [10, 10, 30]},
        {"name": "polyline", "all_points_x": [1, 5], "all_points_y": [1, 5]},
        {"name": "point", "cx": 3, "cy": 3},
    ]
    regions = [{"shape_attributes": s, "region_attributes": {"type": "glioma"}} for s in shapes]
    metadata = {"a.jpg1": via_entry("a.jpg", regions),
                "missing.jpg1": via_entry("missing.jpg", regions[:1])}
    project = tmp_path / "project.json"
    project.write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": metadata}))
    result = prepare(PrepareOptions("via", project, tmp_path / "out", image_root=src,
                                    classes="type"))
    anns = result.splits["all"]["annotations"]
    assert len(anns) == 4
    assert {a["category_id"] for a in anns} == {2}  # glioma from the region attributes
    rect = decode(anns[0], 96, 128)
    assert rect.sum() == 30 * 20 and rect[12:32, 10:40].all()
    circle = decode(anns[1], 96, 128)
    assert abs(circle.sum() - np.pi * 100) < 0.05 * np.pi * 100
    assert abs(decode(anns[2], 96, 128).sum() - np.pi * 15 * 8) < 0.05 * np.pi * 15 * 8
    reasons = dict(result.issues.skipped)
    assert "needs at least 3" in reasons["a.jpg region 4"]
    assert "no area" in reasons["a.jpg region 5"]
    assert "not found" in reasons["missing.jpg"]
    assert "not in project.json" in reasons["extra.jpg"]


def test_type_classes_need_known_types(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jpeg(src / "plain.jpg")
    regions = [{"shape_attributes": POLYGON, "region_attributes": {}}]
    (src / "via.json").write_text(json.dumps({"k": via_entry("plain.jpg", regions)}))
    assert prepare(PrepareOptions("via", src, tmp_path / "o1")).splits["all"]["images"][0][
        "patient_id"] == "plain"
    with pytest.raises(DatasetError, match="tumor type of plain.jpg is unknown"):
        prepare(PrepareOptions("via", src, tmp_path / "o2", classes="type"))


def test_unparsable_and_empty_inputs_fail_clearly(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json is not valid JSON"):
        prepare(PrepareOptions("via", tmp_path / "bad.json", tmp_path / "out"))
    with pytest.raises(DatasetError, match="input not found"):
        prepare(PrepareOptions("via", tmp_path / "nope", tmp_path / "out"))
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(DatasetError, match="nothing usable"):
        prepare(PrepareOptions("via", tmp_path / "empty.json", tmp_path / "out"))


def test_real_46_slices(shared_mri, tmp_path):
    """46 JPEGs -> 46 images, 46 instances; area within 1 % of the shoelace polygon area."""
    src = shared_mri / "train"
    result = prepare(PrepareOptions("via", src, tmp_path / "brain_tumor", split="0.6,0.2,0.2",
                                    classes="type"))
    assert not result.issues.skipped
    images = [i for c in result.splits.values() for i in c["images"]]
    anns = [a for c in result.splits.values() for a in c["annotations"]]
    assert len(images) == 46 and len(anns) == 46
    assert len({i["patient_id"] for i in images}) == 7
    via = json.loads((src / "via_region_data.json").read_text())
    shapes = {e["filename"]: e["regions"]["0"]["shape_attributes"] for e in via.values()}
    names = {i["id"]: i["file_name"] for i in images}
    for ann in anns:
        shape = shapes[names[ann["image_id"]]]
        expected = shoelace(shape["all_points_x"], shape["all_points_y"])
        assert abs(ann["area"] - expected) <= 0.01 * expected, names[ann["image_id"]]
        assert_matches_polygon(decode(ann, 512, 512), shape["all_points_x"],
                               shape["all_points_y"])
    for split, coco in result.splits.items():  # patients never cross splits
        others = {i["patient_id"] for s, c in result.splits.items() if s != split
                  for i in c["images"]}
        assert not others & {i["patient_id"] for i in coco["images"]}
