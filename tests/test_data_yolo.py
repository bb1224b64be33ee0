"""YOLO box labels, tumor-free negatives and patient blocks through prepare_dataset's one
pipeline (readers -> Sample -> write_dataset -> COCO)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.cli.prepare_dataset import main as prepare_main
from tumor_det.data.prepare import PrepareOptions, box_annotation, prepare
from tumor_det.data.records import DatasetError, Instance, Issues

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TYPES = ("pituitary", "meningioma", "glioma")  # the figshare_boxes class ids 0, 1, 2


def _image(path: Path, width: int, height: int, mode: str = "L", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, shape, np.uint8), mode).save(path)


def _line(cls: int, box: tuple[float, float, float, float], width: int, height: int) -> str:
    x, y, w, h = box
    return f"{cls} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} {w / width:.6f} " \
           f"{h / height:.6f}"


def _coco(out: Path, split: str = "all") -> COCO:
    return COCO(str(out / "annotations" / f"{split}.json"))


def _boxes_by_file(coco: COCO) -> dict[str, list[tuple[str, list[float]]]]:
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    return {img["file_name"]: [(names[a["category_id"]], a["bbox"])
                               for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))]
            for img in coco.loadImgs(coco.getImgIds())}


def test_yolo_round_trip_boxes_categories_and_empty_labels(tmp_path):
    """Label files beside the images in class folders: every box comes back within 1 px as a
    box-only COCO annotation; an empty label file is a tumor-free image."""
    src, expected = tmp_path / "src", {}
    rng = np.random.default_rng(0)
    for cls in range(3):
        for k in range(3):
            width, height = int(rng.integers(40, 90)), int(rng.integers(30, 80))
            stem = src / str(cls) / f"{10 * cls + k}"
            _image(stem.with_suffix(".png"), width, height, seed=cls * 10 + k)
            boxes = []
            for _ in range(k):  # k = 0: an empty label file, a tumor-free image
                w, h = rng.uniform(3, width / 2), rng.uniform(3, height / 2)
                boxes.append((float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)),
                              float(w), float(h)))
            stem.with_suffix(".txt").write_text(
                "".join(_line(cls, b, width, height) + "\n" for b in boxes))
            expected[f"{cls}/{stem.name}.png"] = [(TYPES[cls], b) for b in boxes]
    result = prepare(PrepareOptions("yolo", src, tmp_path / "out", classes="type",
                                    class_names=",".join(TYPES)))
    assert not result.issues.skipped and not result.issues.warnings
    coco = _coco(tmp_path / "out")
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == \
        ["meningioma", "glioma", "pituitary"]
    found = _boxes_by_file(coco)
    assert set(found) == set(expected)
    for name, boxes in expected.items():
        assert [t for t, _ in found[name]] == [t for t, _ in boxes], name
        for (_, got), (_, want) in zip(found[name], boxes, strict=True):
            assert np.abs(np.subtract(got, want)).max() < 1.0, name
    assert sum(not boxes for boxes in found.values()) == 3  # the empty label files
    data = json.loads((tmp_path / "out" / "annotations" / "all.json").read_text())
    for ann in data["annotations"]:
        assert "segmentation" not in ann and ann["iscrowd"] == 0
        assert ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3], abs=1e-2)
    # the images are copied as they are, the image entries name their tumor type
    assert (tmp_path / "out" / "images" / "2" / "21.png").read_bytes() == \
        (src / "2" / "21.png").read_bytes()
    types = {i["file_name"]: i.get("tumor_type") for i in data["images"]}
    assert types["0/1.png"] == "pituitary" and types["0/0.png"] is None
    assert "tumor-free" in result.summary()


def test_box_only_coco_loads_in_detectron2(tmp_path):
    """Detectron2's load_coco_json (through the catalog's loader) reads box-only annotations
    and tumor-free images."""
    from tumor_det.data.catalog import load_tumor_coco

    from detectron2.structures import BoxMode

    src = tmp_path / "src"
    _image(src / "a.png", 60, 40)
    (src / "a.txt").write_text(_line(0, (6, 4, 30, 20), 60, 40))
    _image(src / "b.png", 50, 50)
    (src / "b.txt").write_text("")
    prepare(PrepareOptions("yolo", src, tmp_path / "out"))
    records = load_tumor_coco(tmp_path / "out" / "annotations" / "all.json",
                              tmp_path / "out" / "images", "boxes_all")
    by_name = {Path(r["file_name"]).name: r for r in records}
    assert by_name["b.png"]["annotations"] == []
    (ann,) = by_name["a.png"]["annotations"]
    assert ann["bbox_mode"] == BoxMode.XYWH_ABS and "segmentation" not in ann
    assert np.allclose(ann["bbox"], [6, 4, 30, 20], atol=1e-3)


def test_ultralytics_layout_and_data_yaml_names(tmp_path):
    """images/<split>/ + labels/<split>/, names from data.yaml as a dict; file names lose the
    images/ folder; --class-names overrides data.yaml; unknown class ids are skipped."""
    src = tmp_path / "src"
    for split, stem, cls in (("train", "a", 1), ("train", "b", 0), ("val", "c", 2)):
        _image(src / "images" / split / f"{stem}.jpg", 64, 48, mode="RGB")
        label = src / "labels" / split / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(_line(cls, (8, 8, 16, 12), 64, 48) + "\n")
    (src / "labels" / "val" / "c.txt").write_text(
        _line(2, (8, 8, 16, 12), 64, 48) + "\n" + _line(5, (1, 1, 5, 5), 64, 48) + "\n")
    (src / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                   "names:\n  0: pituitary_tumor\n  1: glioma\n"
                                   "  2: meningioma\n")
    result = prepare(PrepareOptions("yolo", src, tmp_path / "out", classes="type"))
    found = _boxes_by_file(_coco(tmp_path / "out"))
    assert {k: [t for t, _ in v] for k, v in found.items()} == {
        "train/a.jpg": ["glioma"], "train/b.jpg": ["pituitary"], "val/c.jpg": ["meningioma"]}
    assert result.issues.skipped == [("labels/val/c.txt line 2", "unknown class id 5 (classes: "
                                      "0 pituitary_tumor, 1 glioma, 2 meningioma)")]
    assert (tmp_path / "out" / "images" / "val" / "c.jpg").read_bytes() == \
        (src / "images" / "val" / "c.jpg").read_bytes()
    # the list form, given on the command line, wins over data.yaml
    result = prepare(PrepareOptions("yolo", src, tmp_path / "out2", classes="type",
                                    class_names="pituitary,meningioma,glioma"))
    found = _boxes_by_file(_coco(tmp_path / "out2"))
    assert {k: [t for t, _ in v] for k, v in found.items()} == {
        "train/a.jpg": ["meningioma"], "train/b.jpg": ["pituitary"], "val/c.jpg": ["glioma"]}
    # data.yaml given as --input: the same dataset
    prepare(PrepareOptions("yolo", src / "data.yaml", tmp_path / "out3"))
    assert len(_coco(tmp_path / "out3").getAnnIds()) == 3


def test_type_classes_need_type_names(tmp_path):
    src = tmp_path / "src"
    _image(src / "a.png", 32, 32)
    (src / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match="needs the YOLO class names"):
        prepare(PrepareOptions("yolo", src, tmp_path / "out", classes="type"))
    (src / "data.yaml").write_text("names: [tumor]\n")
    with pytest.raises(DatasetError, match="class 0 'tumor' is not a tumor type"):
        prepare(PrepareOptions("yolo", src, tmp_path / "out", classes="type"))
    # one class "tumor": every box is a tumor, whatever the names
    result = prepare(PrepareOptions("yolo", src, tmp_path / "out"))
    assert result.class_names == ["tumor"] and len(result.splits["all"]["annotations"]) == 1
    with pytest.raises(DatasetError, match="is for --format yolo"):
        prepare(PrepareOptions("via", src, tmp_path / "out", class_names="a"))
    (src / "data.yaml").unlink()
    (src / "classes.txt").write_text("glioma\n")  # labelImg's class list
    result = prepare(PrepareOptions("yolo", src, tmp_path / "txt", classes="type"))
    assert [a["category_id"] for a in result.splits["all"]["annotations"]] == [2]
    assert not result.issues.skipped  # classes.txt is no orphan label file
    (src / "data.yaml").write_text("names: [unclosed\n")
    with pytest.raises(DatasetError, match="cannot read .*data.yaml"):
        prepare(PrepareOptions("yolo", src, tmp_path / "out", classes="type"))


def test_segment_lines_are_outlines(tmp_path):
    """An Ultralytics segment line (class x1 y1 x2 y2 ...) goes through the polygon rule and
    keeps its outline, beside box-only annotations."""
    src = tmp_path / "src"
    _image(src / "a.png", 40, 20)
    (src / "a.txt").write_text("0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n0 0.5 0.5 0.5 0.5\n")
    anns = prepare(PrepareOptions("yolo", src, tmp_path / "out")).splits["all"]["annotations"]
    assert anns[0]["segmentation"] == [[10.0, 5.0, 30.0, 5.0, 30.0, 15.0, 10.0, 15.0]]
    assert anns[0]["bbox"] == [10.0, 5.0, 20.0, 10.0] and anns[0]["area"] == 200.0
    assert "segmentation" not in anns[1] and anns[1]["bbox"] == [10.0, 5.0, 20.0, 10.0]


def test_malformed_lines_are_skipped_by_name(tmp_path):
    src = tmp_path / "src"
    _image(src / "x.png", 100, 50)
    lines = ["0 0.5 0.5 0.2 0.4",      # 1: good: (40, 15, 20, 20)
             "",                       # 2: blank: ignored
             "0 0.5 0.5",              # 3: too few values
             "a 0.5 0.5 0.1 0.1",      # 4: class id not a number
             "-1 0.5 0.5 0.1 0.1",     # 5: negative class id
             "0 0.5 0.5 0 0.1",        # 6: zero width
             "0 1.5 0.5 0.1 0.1",      # 7: centre outside: out of range
             "0 0.5 0.5 0.1 x",        # 8: not a number
             "0 nan 0.5 0.1 0.1",      # 9: non-finite
             "0 0.95 0.5 0.2 0.2",     # 10: spills over the right border: clipped
             "3 0.5 0.5 0.1 0.1",      # 11: unknown class (3 names)
             "0 0.5 0.5 0.1 0.1 0.9"]  # 12: 6 values
    (src / "x.txt").write_text("\n".join(lines) + "\n")
    _image(src / "nolabel.png", 20, 20)  # no label file: skipped (kept with --keep-negatives)
    _image(src / "allbad.png", 20, 20)
    (src / "allbad.txt").write_text("0 0.5\n")  # nothing usable: the image is skipped
    (src / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    result = prepare(PrepareOptions("yolo", src, tmp_path / "out",
                                    class_names="glioma,meningioma,pituitary"))
    reasons = dict(result.issues.skipped)
    assert set(reasons) == {f"x.txt line {n}" for n in (3, 4, 5, 6, 7, 8, 9, 11, 12)} | {
        "nolabel.png", "allbad.txt line 1", "allbad.png", "orphan.txt"}
    assert "malformed line (3 values)" in reasons["x.txt line 3"]
    assert reasons["x.txt line 4"] == "class id 'a' is not a non-negative integer"
    assert reasons["x.txt line 5"] == "class id '-1' is not a non-negative integer"
    assert reasons["x.txt line 6"].startswith("zero-size box")
    assert "out of range" in reasons["x.txt line 7"]
    assert "not numbers" in reasons["x.txt line 8"]
    assert reasons["x.txt line 9"] == "non-finite coordinates"
    assert reasons["x.txt line 11"].startswith("unknown class id 3")
    assert "malformed line (6 values)" in reasons["x.txt line 12"]
    assert "no label file (nolabel.txt)" in reasons["nolabel.png"]
    assert reasons["allbad.png"].startswith("no usable box in allbad.txt")
    assert reasons["orphan.txt"] == "label file without an image"
    assert [item for item, _ in result.issues.warnings] == ["x.txt line 10"]
    boxes = sorted(a["bbox"] for a in result.splits["all"]["annotations"])
    assert boxes == [[40.0, 15.0, 20.0, 20.0], [85.0, 20.0, 15.0, 10.0]]  # clipped at x=100
    # --keep-negatives keeps the image without a label file, as tumor-free
    kept = prepare(PrepareOptions("yolo", src, tmp_path / "kept", keep_negatives=True,
                                  class_names="glioma,meningioma,pituitary"))
    names = {i["file_name"] for i in kept.splits["all"]["images"]}
    assert names == {"x.png", "nolabel.png"}


def test_writer_box_rules():
    issues = Issues()
    clipped = box_annotation(Instance(bbox=(-2.0, 5.0, 10.0, 10.0)), 20, 12, "a", issues)
    assert clipped == {"area": 56.0, "bbox": [0.0, 5.0, 8.0, 7.0], "iscrowd": 0}
    assert issues.warnings == [("a", "bbox [-2.0, 5.0, 10.0, 10.0] clipped to the 20x12 image")]
    assert box_annotation(Instance(bbox=(25.0, 5.0, 10.0, 10.0)), 20, 12, "b", issues) is None
    assert box_annotation(Instance(bbox=(5.0, 5.0, 0.0, 3.0)), 20, 12, "c", issues) is None
    assert box_annotation(Instance(bbox=("x", 1, 2)), 20, 12, "d", issues) is None
    assert [item for item, _ in issues.skipped] == ["b", "c", "d"]
    assert all(reason.startswith("zero-size box") for _, reason in issues.skipped[:2])


def _negatives(folder: Path) -> None:
    _image(folder / "n1.jpg", 40, 30, mode="RGB")  # grey stored as RGB: copied as is
    _image(folder / "sub" / "n2.png", 24, 24)
    deep = (np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100)
    Image.fromarray(deep).save(folder / "n3.png")  # 16-bit: converted
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")


def test_negatives_are_added_as_images_without_annotations(tmp_path):
    src = tmp_path / "src"
    for k in range(6):
        _image(src / f"t{k}.png", 32, 32, seed=k)
        (src / f"t{k}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    _negatives(tmp_path / "free")
    _negatives(tmp_path / "other" / "free")  # the same folder name: its own prefix
    out = tmp_path / "out"
    result = prepare(PrepareOptions("yolo", src, out, folds=3,
                                    negatives=[tmp_path / "free", tmp_path / "other" / "free"]))
    images = [i for c in result.splits.values() for i in c["images"]]
    annotated = {a["image_id"] for c in result.splits.values() for a in c["annotations"]}
    negatives = sorted(i["file_name"] for i in images if i["id"] not in annotated)
    assert negatives == ["free-1/n1.jpg", "free-1/n3.png", "free-1/sub/n2.png",
                         "free/n1.jpg", "free/n3.png", "free/sub/n2.png"]
    assert len(images) == 12 and len(annotated) == 6
    assert dict(result.issues.skipped).keys() == {"free/broken.jpg", "free-1/broken.jpg"}
    assert len({i["patient_id"] for i in images}) == 12  # each image its own group
    assert (out / "images" / "free" / "n1.jpg").read_bytes() == \
        (tmp_path / "free" / "n1.jpg").read_bytes()
    assert Image.open(out / "images" / "free" / "n3.png").mode == "L"
    for coco in result.splits.values():  # the negatives are spread over the folds
        assert sum(i["id"] not in annotated for i in coco["images"]) == 2
    # images, tumor-free, patients, instances, tumor
    assert re.search(r"^total\s+12\s+6\s+12\s+6\s+6$", result.summary(), re.MULTILINE)
    info = json.loads((out / "annotations" / "fold0.json").read_text())["info"]
    assert "--negatives" in info["description"]
    # --format images: a dataset of negatives only
    only = prepare(PrepareOptions("images", tmp_path / "free", tmp_path / "only", folds=3))
    assert [len(c["images"]) for c in only.splits.values()] == [1, 1, 1]
    assert not any(c["annotations"] for c in only.splits.values())
    # an image with boxes in its label file is not tumor-free
    with pytest.raises(DatasetError, match="not tumor-free"):
        prepare(PrepareOptions("images", src, tmp_path / "wrong"))


def test_patient_blocks_keep_blocks_in_one_fold(tmp_path):
    """Numbered files grouped per folder into blocks of N neighbouring numbers, each block in
    one fold; without --patient-blocks each image is its own group."""
    src = tmp_path / "src"
    for folder, numbers in (("0", range(1, 41)), ("1", range(35, 75))):
        for n in numbers:
            _image(src / folder / f"{n}.png", 16, 16, seed=n)
            (src / folder / f"{n}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    _image(src / "1" / "extra.png", 16, 16)
    (src / "1" / "extra.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    for seed in range(3):
        result = prepare(PrepareOptions("yolo", src, tmp_path / f"out{seed}", folds=4,
                                        seed=seed, patient_blocks=10))
        fold_of: dict[str, set[str]] = {}
        for fold, coco in result.splits.items():
            for image in coco["images"]:
                name = Path(image["file_name"])
                if name.stem.isdigit():
                    n = int(name.stem)
                    assert image["patient_id"] == \
                        f"{name.parent}/{n // 10 * 10}-{n // 10 * 10 + 9}"
                else:
                    assert image["patient_id"] == "1/extra"
                fold_of.setdefault(image["patient_id"], set()).add(fold)
        assert all(len(folds) == 1 for folds in fold_of.values())
        assert len(fold_of) == 5 + 5 + 1  # 0/0-9 ... 0/40-49; 1/30-39 ... 1/70-79; 1/extra
        assert ("--patient-blocks", "1 image(s) keep their own patient group (a patient id, "
                "or no number as file name; first: 1/extra.png)") in result.issues.warnings
    single = prepare(PrepareOptions("yolo", src, tmp_path / "single", folds=4))
    assert len({i["patient_id"] for c in single.splits.values() for i in c["images"]}) == 81
    with pytest.raises(DatasetError, match="--patient-blocks must be at least 1"):
        prepare(PrepareOptions("yolo", src, tmp_path / "bad", patient_blocks=0))


def test_cli_yolo_negatives_and_errors(tmp_path, capsys):
    src = tmp_path / "src"
    for k in range(4):
        _image(src / f"{k}.png", 20, 20, seed=k)
        (src / f"{k}.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    _negatives(tmp_path / "free")
    assert prepare_main(["--format", "yolo", "--input", str(src), "--output",
                         str(tmp_path / "out"), "--classes", "type", "--class-names",
                         "pituitary,meningioma,glioma", "--negatives", str(tmp_path / "free"),
                         "--patient-blocks", "2", "--split", "0.5,0.5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "tumor-free" in out and "meningioma" in out
    assert re.search(r"total\s+7\s+3\s+5\s+4\s+4\s+0\s+0$", out, re.MULTILINE)
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--format", "yolo", "--input", str(src), "--output",
                      str(tmp_path / "bad"), "--classes", "type", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("prepare_dataset.py: error: --classes type needs the YOLO class names")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        prepare_main(["--format", "images", "--input", str(tmp_path / "free"), "--output",
                      str(tmp_path / "bad"), "--negatives", str(tmp_path / "missing")])
    assert capsys.readouterr().err == \
        f"prepare_dataset.py: error: --negatives folder not found: {tmp_path / 'missing'}\n"


@pytest.mark.slow
def test_real_br35h_and_figshare_boxes(tmp_path):
    """The real data beside the repository: Br35H's VIA outlines (500 images, 564 outlines)
    and its YOLO boxes agree; every labelled figshare_boxes/0 image gets its box."""
    if not (SHARED / "br35h" / "train").is_dir() or not (SHARED / "figshare_boxes").is_dir():
        pytest.skip(f"{SHARED} not present")
    via = prepare(PrepareOptions("via", SHARED / "br35h" / "train", tmp_path / "via"))
    assert len(via.splits["all"]["images"]) == 500
    assert len(via.splits["all"]["annotations"]) == 564
    yolo = prepare(PrepareOptions("yolo", SHARED / "br35h" / "train", tmp_path / "yolo"))
    assert len(yolo.splits["all"]["images"]) == 500 and not yolo.issues.skipped

    def union_box(coco: dict) -> dict[str, np.ndarray]:
        names = {i["id"]: i["file_name"] for i in coco["images"]}
        boxes: dict[str, list] = {}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            boxes.setdefault(names[ann["image_id"]], []).append([x, y, x + w, y + h])
        return {k: np.r_[np.min(v, 0)[:2], np.max(v, 0)[2:]] for k, v in boxes.items()}

    outlines, boxes = union_box(via.splits["all"]), union_box(yolo.splits["all"])
    ious = []
    for name, (x0, y0, x1, y1) in boxes.items():
        a0, b0, a1, b1 = outlines[name]
        inter = max(0, min(x1, a1) - max(x0, a0)) * max(0, min(y1, b1) - max(y0, b0))
        ious.append(inter / ((x1 - x0) * (y1 - y0) + (a1 - a0) * (b1 - b0) - inter))
    assert np.median(ious) > 0.9  # width and height the right way round, on mixed sizes

    folder = SHARED / "figshare_boxes" / "0"
    labelled = {p.stem for p in folder.glob("*.txt") if p.read_text().strip()}
    result = prepare(PrepareOptions("yolo", folder, tmp_path / "fig", classes="type",
                                    class_names=",".join(TYPES), folds=5, patient_blocks=50))
    images = {i["id"]: i for c in result.splits.values() for i in c["images"]}
    with_box = {Path(images[a["image_id"]]["file_name"]).stem
                for c in result.splits.values() for a in c["annotations"]}
    assert with_box == labelled and len(images) == len(labelled) == 463
    assert {a["category_id"] for c in result.splits.values() for a in c["annotations"]} == {3}
    fold_of = {}
    for fold, coco in result.splits.items():
        for image in coco["images"]:
            assert fold_of.setdefault(image["patient_id"], fold) == fold
