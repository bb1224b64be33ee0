"""Mixed supervision: box-only instances train boxes, never the mask loss; tumor-free images
and several datasets mix in one run by their sampling weights."""

from __future__ import annotations

import json
from collections import Counter

import tumor_det  # noqa: F401
from tumor_det.config.config import get_tumor_cfg
from tumor_det.data import register_all
from tumor_det.data.augmentation import TumorDatasetMapper, box_polygon
from tumor_det.data.sampling import dataset_repeat_factors, has_outlines, weighted_train_dataset
from tumor_det.engine.trainer import TumorTrainer
from tumor_det.modeling.mask_head import TumorMaskHead

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_loss
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage
from toy_data import toy_opts, write_toy_dataset


@pytest.fixture(autouse=True)
def _storage():
    with EventStorage():  # mask_rcnn_loss logs its accuracy there
        yield


def _head() -> TumorMaskHead:
    torch.manual_seed(0)
    head = TumorMaskHead(ShapeSpec(channels=8, width=14, height=14), num_classes=1,
                         conv_dims=[8], conv_norm="").train()
    torch.nn.init.normal_(head.predictor.weight, std=1.0)  # logits far from 0: losses differ
    return head


def _fg(n: int, has_mask: list[bool], seed: int) -> Instances:
    g = torch.Generator().manual_seed(seed)
    inst = Instances((32, 32))
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0]] * n)
    inst.proposal_boxes = Boxes(boxes)
    inst.gt_classes = torch.zeros(n, dtype=torch.int64)
    inst.gt_masks = BitMasks(torch.rand(n, 32, 32, generator=g) > 0.5)
    inst.gt_has_mask = torch.tensor(has_mask)
    return inst


def test_box_only_instances_are_left_out_of_the_mask_loss():
    head = _head()
    x = torch.randn(5, 8, 14, 14)
    a, b = _fg(3, [True, False, True], 0), _fg(2, [False, True], 1)
    loss = head(x, [a, b])["loss_mask"]
    keep = torch.tensor([True, False, True, False, True])
    expected = mask_rcnn_loss(head.layers(x[keep]), [a[a.gt_has_mask], b[b.gt_has_mask]])
    assert torch.allclose(loss, expected)
    # what the placeholder masks of box-only instances hold does not change the loss
    a.gt_masks.tensor[1] = ~a.gt_masks.tensor[1]
    b.gt_masks.tensor[0] = ~b.gt_masks.tensor[0]
    assert torch.allclose(head(x, [a, b])["loss_mask"], loss)
    # and it differs from the loss over every instance (the plain head's)
    assert not torch.allclose(mask_rcnn_loss(head.layers(x), [a, b]), loss)


def test_a_batch_without_outlines_gives_a_zero_loss_with_gradients():
    head = _head()
    loss = head(torch.randn(2, 8, 14, 14), [_fg(2, [False, False], 0)])["loss_mask"]
    assert float(loss) == 0.0
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_all_outlined_is_the_plain_head():
    head = _head()
    x = torch.randn(3, 8, 14, 14)
    inst = _fg(3, [True, True, True], 2)
    assert torch.allclose(head(x, [inst])["loss_mask"], mask_rcnn_loss(head.layers(x), [inst]))


def _record(annotations: list[dict]) -> dict:
    return {"file_name": "x.png", "height": 40, "width": 60, "image_id": 1,
            "annotations": annotations}


def test_mapper_carries_box_only_instances_with_their_boxes(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((40, 60), np.uint8))
    cfg = get_tumor_cfg(None, ["INPUT.FORMAT", "BGR"])
    mapper = TumorDatasetMapper(cfg, [T.RandomFlip(prob=0.0)])
    outline = [[10.0, 10.0, 20.0, 10.0, 20.0, 20.0, 10.0, 20.0]]
    record = _record([
        {"bbox": [10, 10, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
         "segmentation": outline},
        {"bbox": [30, 5, 20, 30], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
    ])
    record["file_name"] = str(tmp_path / "x.png")
    out = mapper(record)["instances"]
    assert out.gt_has_mask.tolist() == [True, False]
    assert out.gt_boxes.tensor.tolist() == [[10, 10, 20, 20], [30, 5, 50, 35]]
    # the placeholder is the box, and only a placeholder: it never reaches the mask loss
    assert out.gt_masks.polygons[1][0].tolist() == box_polygon([30, 5, 20, 30],
                                                               BoxMode.XYWH_ABS)
    # all outlined: no flag at all, Detectron2's mapper output exactly
    record["annotations"] = record["annotations"][:1]
    assert not mapper(record)["instances"].has("gt_has_mask")


def test_repeat_factors_give_each_dataset_its_share():
    factors = dataset_repeat_factors([1600, 500, 100], [1, 1, 2])
    shares = [f * n for f, n in zip(factors, [1600, 500, 100], strict=True)]
    assert shares == pytest.approx([550, 550, 1100])  # 2,200 images an epoch, 1:1:2
    with pytest.raises(ValueError, match="2 weights for 3"):
        dataset_repeat_factors([1, 2, 3], [1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        dataset_repeat_factors([1, 2], [0, 0])


def _box_only_copy(src: str, dst: str) -> None:
    coco = json.loads(open(src).read())
    for ann in coco["annotations"]:
        ann.pop("segmentation")
    open(dst, "w").write(json.dumps(coco))


def test_weighted_sampling_draws_datasets_by_weight(tmp_path):
    root = tmp_path / "data"
    write_toy_dataset(root, "big", counts={"train": 24})
    write_toy_dataset(root, "small", counts={"train": 4}, seed=1)
    register_all(str(root))
    dicts, sampler = weighted_train_dataset(["big_train", "small_train"], [1, 1], False)
    names = ["small" if "small" in d["file_name"] else "big" for d in dicts]
    drawn = Counter()
    it = iter(sampler)
    for _ in range(4000):
        drawn[names[next(it)]] += 1
    assert 0.4 < drawn["small"] / 4000 < 0.6  # 1:1 although the sizes are 6:1


def test_box_only_dataset_is_scored_on_boxes(tmp_path):
    root = tmp_path / "data"
    folder = write_toy_dataset(root, "boxes", counts={"train": 4, "val": 4})
    ann = folder / "annotations"
    _box_only_copy(ann / "val.json", ann / "val.json")
    register_all(str(root))
    assert has_outlines("boxes_train") and not has_outlines("boxes_val")
    cfg = get_tumor_cfg(None, ["TUMOR.DATASETS_ROOT", str(root), "TUMOR.EVAL.COCO", "True"])
    coco = TumorTrainer.build_evaluator(cfg, "boxes_val", str(tmp_path / "eval"))._evaluators[0]
    assert coco._tasks == ("bbox",)


def _half_box_only(path) -> None:
    coco = json.loads(path.read_text())
    for k, ann in enumerate(coco["annotations"]):
        if k % 2:
            ann.pop("segmentation")
    path.write_text(json.dumps(coco))


@pytest.mark.slow
def test_mixed_supervision_trains_and_the_loss_falls(tmp_path):
    """Outlines, boxes only and tumor-free images (every 4th toy image) in one run, the box-only
    dataset weighted like the outlined one: every loss is finite and the total falls."""
    from toy_data import train_net_in_process

    root = tmp_path / "data"
    write_toy_dataset(root, "toy", counts={"train": 16, "val": 4})
    boxes = write_toy_dataset(root, "toyboxes", counts={"train": 16}, seed=2)
    _half_box_only(boxes / "annotations" / "train.json")
    out = tmp_path / "out"
    opts = toy_opts(root, out, max_iter=120) + [
        "DATASETS.TRAIN", '("toy_train", "toyboxes_train")', "TUMOR.DATASET_WEIGHTS", "(1, 1)",
        "SOLVER.BASE_LR", "0.02", "SOLVER.CHECKPOINT_PERIOD", "1000"]
    train_net_in_process(["--config-file", "quick_cpu.yaml", *opts])
    rows = [json.loads(line) for line in (out / "metrics.json").open()]
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert all(np.isfinite(r["loss_mask"]) for r in rows if "loss_mask" in r)
    first, last = losses[0], losses[-1]  # windowed medians (Detectron2 logs every 20)
    assert last < 0.85 * first, f"total loss {first:.3f} -> {last:.3f}"


def test_evaluator_scores_box_only_ground_truth_by_hand(tmp_path):
    """Hand-computed: 3 true boxes on 2 slices, 3 detections (IoU 0.64, 0.25, none) + a tumor-free
    slice with one false detection."""
    from tumor_det.evaluation.evaluator import TumorEvaluator

    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = "box_only_by_hand"
    xywh = BoxMode.XYWH_ABS
    records = [
        {"image_id": 1, "file_name": "a.png", "height": 100, "width": 100, "annotations": [
            {"bbox": [10, 10, 20, 20], "bbox_mode": xywh, "category_id": 0, "iscrowd": 0},
            {"bbox": [60, 60, 20, 20], "bbox_mode": xywh, "category_id": 2, "iscrowd": 0}]},
        {"image_id": 2, "file_name": "b.png", "height": 100, "width": 100, "annotations": [
            {"bbox": [40, 40, 10, 10], "bbox_mode": xywh, "category_id": 1, "iscrowd": 0}]},
        {"image_id": 3, "file_name": "c.png", "height": 100, "width": 100, "annotations": []},
    ]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["pituitary", "meningioma", "glioma"])

    def out(boxes, classes, scores):
        inst = Instances((100, 100))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        inst.scores = torch.tensor(scores)
        return {"instances": inst}

    ev = TumorEvaluator(name, score_threshold=0.5, lesion_iou=0.1)
    ev.reset()
    ev.process([{"image_id": 1}, {"image_id": 2}, {"image_id": 3}], [
        # 14x14 inside... : box (12,12)-(28,28) vs (10,10)-(30,30): 256/400 = 0.64, right class;
        # (60,60)-(70,70) vs (60,60)-(80,80): 100/400 = 0.25, wrong class; a 0.3-score one ignored
        out([[12, 12, 28, 28], [60, 60, 70, 70], [0, 0, 99, 99]], [0, 0, 1], [0.9, 0.8, 0.3]),
        out([], [], []),                           # the meningioma missed
        out([[5, 5, 15, 15]], [1], [0.7]),         # a false tumor on a tumor-free slice
    ])
    m = ev.evaluate()["tumor"]
    assert m["box_sensitivity50"] == pytest.approx(1 / 3)
    assert m["box_sensitivity_any"] == pytest.approx(2 / 3)
    assert m["box_sensitivity50/pituitary"] == 1.0
    assert m["box_sensitivity50/glioma"] == 0.0 and m["box_sensitivity50/meningioma"] == 0.0
    assert m["type_accuracy"] == 1.0  # the one found at 0.5 has its class right
    assert m["box_fp_per_image"] == pytest.approx(1 / 3)  # only the tumor-free slice's
    assert m["sensitivity"] == pytest.approx(2 / 3)  # lesions at IoU >= 0.1 on box-only slices
    assert np.isnan(m["dice"])  # no outline, no Dice
    assert m["image_specificity"] == 0.0
