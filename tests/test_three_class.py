"""Three tumor types end to end: prepare (``--classes type``), train, ``--eval-only``, splash.

The source is a COCO file whose category ids are 5, 7 and 9 (not 1..3), so that a contiguous
class index (0..2) written where a dataset id belongs shows. Slices come from
:func:`tumor_det.data.synthetic.synthetic_slice` (tumor-free anatomy) with one drawn lesion per
slice, its shape given by the patient's tumor type (solid disc, ring, square) so the types can
be told apart. ``tools/prepare_dataset.py --classes type`` renumbers the categories 1..3
(meningioma, glioma, pituitary); the quick config trains 3 classes on them at 64 px.
The checks are what training guarantees, not how well it classifies: the loss falls, ids and
names come from the dataset's categories, the contiguous -> dataset id mapping is applied.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.data.records import TUMOR_TYPES
from tumor_det.data.synthetic import synthetic_slice

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from toy_data import train_net_in_process

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
SOURCE_IDS = (5, 7, 9)  # meningioma, glioma, pituitary in the source COCO file
SIZE = 64
ITERATIONS = 200


def _lesion(kind: int, cx: float, cy: float, r: float) -> np.ndarray:
    """The outline (N x 2, x y) of a type-``kind`` lesion: disc, disc (ring), square."""
    if kind == 2:
        t = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
    else:
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def write_typed_coco(folder: Path, patients: int = 12, slices: int = 3, seed: int = 0) -> Path:
    """``folder/annotations.json`` (category ids 5, 7, 9) and ``folder/images/*.png``.

    Patient ``p`` has type ``p % 3``: a bright disc (meningioma), a bright ring with a dark
    core (glioma) or a bright square (pituitary), radius 6-10 px in a synthetic 64 px slice.
    """
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    images, anns = [], []
    for p in range(patients):
        kind = p % 3
        for k in range(slices):
            image, _ = synthetic_slice(rng, size=SIZE, num_tumors=0)
            r = float(rng.uniform(SIZE / 10, SIZE / 6))
            cx, cy = (float(v) for v in rng.uniform(SIZE * 0.35, SIZE * 0.65, 2))
            outline = _lesion(kind, cx, cy, r)
            cv2.fillPoly(image, [np.round(outline).astype(np.int32)], 235)
            if kind == 1:
                cv2.circle(image, (round(cx), round(cy)), round(r * 0.5), 30, -1)
            name = f"p{p:02d}_{k}.png"
            cv2.imwrite(str(folder / "images" / name), image)
            images.append({"id": len(images) + 1, "file_name": name, "width": SIZE,
                           "height": SIZE, "patient_id": f"p{p:02d}"})
            polygon = [outline.ravel().tolist()]
            rle = mask_util.merge(mask_util.frPyObjects(polygon, SIZE, SIZE))
            anns.append({"id": len(anns) + 1, "image_id": len(images),
                         "category_id": SOURCE_IDS[kind], "iscrowd": 0,
                         "segmentation": polygon, "area": float(mask_util.area(rle)),
                         "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": i, "name": n} for i, n in zip(SOURCE_IDS, TUMOR_TYPES,
                                                                 strict=True)]}
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def _type_of(coco: dict) -> dict[str, str]:
    """``{file name: type name}`` of a COCO dict with one annotation per image."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    return {files[a["image_id"]]: names[a["category_id"]] for a in coco["annotations"]}


def _opts(root: Path, output: Path, test: str = "types_val") -> list[str]:
    return [
        "TUMOR.DATASETS_ROOT", str(root), "MODEL.ROI_HEADS.NUM_CLASSES", "3",
        "DATASETS.TRAIN", '("types_train",)', "DATASETS.TEST", f'("{test}",)',
        "INPUT.MIN_SIZE_TRAIN", f"({SIZE},)", "INPUT.MAX_SIZE_TRAIN", str(2 * SIZE),
        "INPUT.MIN_SIZE_TEST", str(SIZE), "INPUT.MAX_SIZE_TEST", str(2 * SIZE),
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(ITERATIONS),
        "SOLVER.STEPS", f"({int(ITERATIONS * 0.8)},)", "SOLVER.WARMUP_ITERS", "20",
        "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.EVAL_PERIOD", "0",
        "TUMOR.EVAL.SCORE_THRESHOLD", "0.05", "OUTPUT_DIR", str(output), "SEED", "1",
    ]


def _train_net(argv: list[str]):
    """``tools/train_net.py``'s ``main`` on ``argv`` in this process (one thread)."""
    return train_net_in_process(["--config-file", "configs/quick_cpu.yaml", *argv])


@pytest.fixture(scope="module")
def typed(tmp_path_factory) -> dict:
    """Prepared ``types`` (ids 1..3), the same val split as ``types579`` (ids 5, 7, 9), and a
    model trained for ``ITERATIONS`` iterations on ``types_train``."""
    tmp = tmp_path_factory.mktemp("three_class")
    source = write_typed_coco(tmp / "source")
    root = tmp / "datasets"
    prepare = runpy.run_path(str(TOOLS / "prepare_dataset.py"))["main"]
    assert prepare(["--format", "coco", "--input", str(source), "--output", str(root / "types"),
                    "--classes", "type", "--split", "0.67,0.33", "--quiet"]) == 0
    # The source's val images with their original category ids, as a second registered dataset.
    val = json.loads((root / "types" / "annotations" / "val.json").read_text())
    src = json.loads(source.read_text())
    keep = {i["file_name"] for i in val["images"]}
    ids = {i["id"] for i in src["images"] if i["file_name"] in keep}
    (root / "types579" / "annotations").mkdir(parents=True)
    shutil.copytree(root / "types" / "images", root / "types579" / "images")
    (root / "types579" / "annotations" / "val.json").write_text(json.dumps({
        **src, "images": [i for i in src["images"] if i["id"] in ids],
        "annotations": [a for a in src["annotations"] if a["image_id"] in ids]}))
    run = tmp / "run"
    _train_net(_opts(root, run))
    return {"tmp": tmp, "source": src, "root": root, "run": run,
            "weights": run / "model_final.pth", "val_files": sorted(keep)}


def test_prepare_renumbers_types_1_to_3_and_keeps_each_lesions_type(typed):
    ann = typed["root"] / "types" / "annotations"
    splits = {name: json.loads((ann / f"{name}.json").read_text()) for name in ("train", "val")}
    expected = _type_of(typed["source"])
    for coco in splits.values():
        assert [(c["id"], c["name"]) for c in coco["categories"]] == [
            (1, "meningioma"), (2, "glioma"), (3, "pituitary")]
        types = _type_of(coco)
        assert types == {f: expected[f] for f in types}  # each lesion kept its type
    # patient-level split, every type in both splits
    patients = [{i["patient_id"] for i in coco["images"]} for coco in splits.values()]
    assert not patients[0] & patients[1]
    for coco in splits.values():
        assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3}
    assert sum(len(c["images"]) for c in splits.values()) == len(typed["source"]["images"])


def test_three_class_training_loss_falls(typed):
    lines = [json.loads(line) for line in (typed["run"] / "metrics.json").read_text().splitlines()]
    losses = [(m["iteration"], m["total_loss"]) for m in lines if "total_loss" in m]
    assert losses[-1][0] == ITERATIONS - 1
    first, last = losses[0][1], losses[-1][1]
    assert last < 0.75 * first, losses
    # the final checkpoint has a 3-class box predictor (+1 background) and 3 mask outputs
    state = torch.load(typed["weights"], map_location="cpu", weights_only=False)["model"]
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 12
    assert state["roi_heads.mask_head.predictor.weight"].shape[0] == 3


@pytest.mark.parametrize("dataset, ids", [("types_val", {1, 2, 3}),
                                          ("types579_val", set(SOURCE_IDS))])
def test_eval_only_reports_per_type_ap_with_dataset_ids(typed, tmp_path, dataset, ids):
    out = tmp_path / "eval"
    results = _train_net(["--eval-only", *_opts(typed["root"], out, test=dataset),
                          "MODEL.WEIGHTS", str(typed["weights"])])
    for task in ("bbox", "segm"):
        assert {f"AP-{name}" for name in TUMOR_TYPES} <= set(results[task]), results[task]
    assert results["tumor"]["images"] == len(typed["val_files"])
    predictions = json.loads((out / "inference" / dataset /
                              "coco_instances_results.json").read_text())
    assert predictions, "no detection at all after training"
    assert {p["category_id"] for p in predictions} <= ids


SPLASH = """
import sys
import tumor_det.splash.sink as sink
from tumor_det.cli.splash import main

drawn = []
_draw = sink.draw_overlay


def draw_overlay(image, masks, scores, classes, class_names, *args, **kwargs):
    drawn.append({"classes": [int(c) for c in classes], "names": list(class_names)})
    return _draw(image, masks, scores, classes, class_names, *args, **kwargs)


sink.draw_overlay = draw_overlay
code = main(sys.argv[2:])
import json
open(sys.argv[1], "w").write(json.dumps(drawn))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def splashed(typed) -> dict:
    """tools/splash.py's ``main`` in a fresh process (as a user runs it) on the val slices,
    with ``DATASETS.TEST`` the source-id dataset; what the overlays were drawn with."""
    out = typed["tmp"] / "splash"
    drawn = typed["tmp"] / "drawn.json"
    images = typed["root"] / "types579" / "images"
    inputs = [str(images / name) for name in typed["val_files"]]
    opts = _opts(typed["root"], typed["tmp"] / "unused", test="types579_val")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SPLASH, str(drawn), "--weights", str(typed["weights"]),
         "--input", *inputs, "--output", str(out), "--confidence-threshold", "0.05", *opts],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {"out": out, "inputs": inputs, "drawn": json.loads(drawn.read_text()), "rows": rows,
            "records": json.loads((out / "results.json").read_text())}


def test_splash_writes_every_output_of_a_three_class_model(splashed):
    out, inputs = splashed["out"], splashed["inputs"]
    assert [r["file"] for r in splashed["rows"]] == inputs
    assert all(r["kind"] == "image" for r in splashed["rows"])
    for path in map(Path, inputs):
        for suffix in ("splash", "overlay", "mask"):
            assert (out / f"{path.stem}_{suffix}.png").is_file()
    records = splashed["records"]
    assert records, "no tumor found on any val slice"
    assert {r["file_name"] for r in records} <= set(inputs)
    per_file = {r["file"]: int(r["tumors"]) for r in splashed["rows"]}
    assert all(per_file[r["file_name"]] > 0 for r in records)
    assert len(splashed["drawn"]) == len(inputs)
    assert {c for d in splashed["drawn"] for c in d["classes"]} <= {0, 1, 2}


def test_splash_maps_classes_to_the_datasets_ids_and_names(splashed):
    names = list(TUMOR_TYPES)  # the types579 categories 5, 7, 9 in id order
    assert all(d["names"] == names for d in splashed["drawn"]), splashed["drawn"][:2]
    assert {r["category_id"] for r in splashed["records"]} <= set(SOURCE_IDS)
