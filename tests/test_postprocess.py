"""One tumor, one detection: class-agnostic merging of stacked detections by their masks."""

from __future__ import annotations

import tumor_det  # noqa: F401
from tumor_det.modeling.postprocessing import merge_instances

import torch
from detectron2.structures import Boxes, Instances


def instances(rects: list[tuple[int, int, int, int]], scores: list[float],
              classes: list[int] | None = None, size: int = 40) -> Instances:
    masks = torch.zeros((len(rects), size, size), dtype=torch.bool)
    for n, (x0, y0, x1, y1) in enumerate(rects):
        masks[n, y0:y1, x0:x1] = True
    inst = Instances((size, size))
    inst.pred_masks = masks
    inst.pred_boxes = Boxes(torch.tensor(rects, dtype=torch.float))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes or [0] * len(rects))
    return inst


def test_stacked_detections_of_one_tumor_become_one():
    # a tumor found three times: the full outline, a part inside it, and a shifted copy
    # under another class; plus a separate tumor elsewhere that must stay
    stacked = instances([(5, 5, 20, 20), (8, 8, 14, 14), (6, 6, 21, 21), (30, 30, 36, 36)],
                        [0.6, 0.9, 0.7, 0.8], classes=[0, 0, 2, 0])
    for mask_rule in ("best", "union"):
        merged = merge_instances(stacked, iou=0.5, containment=0.8, mask=mask_rule)
        assert len(merged) == 2
        # highest score first: the 0.9 detection is kept (with its class), absorbs the others
        assert torch.allclose(merged.scores, torch.tensor([0.9, 0.8]))
        assert merged.pred_classes.tolist() == [0, 0]
        assert torch.equal(merged.pred_masks[1], stacked.pred_masks[3])
        assert merged.pred_boxes.tensor[1].tolist() == [30, 30, 36, 36]
    # "best" (the default): the kept detection's own mask and box, never grown
    best = merge_instances(stacked, iou=0.5, containment=0.8)
    assert torch.equal(best.pred_masks[0], stacked.pred_masks[1])
    assert best.pred_boxes.tensor[0].tolist() == [8, 8, 14, 14]
    # "union": the members' union and its box
    union = merge_instances(stacked, iou=0.5, containment=0.8, mask="union")
    assert torch.equal(union.pred_masks[0], stacked.pred_masks[[0, 1, 2]].any(dim=0))
    assert union.pred_boxes.tensor[0].tolist() == [5, 5, 21, 21]


def test_a_small_tumor_inside_a_large_detection_is_never_grown():
    # the real-data failure: a large false detection around a small true tumor that scores
    # higher; the merge keeps the tumor as it was found
    nested = instances([(0, 0, 40, 40), (10, 10, 16, 16)], [0.6, 0.9])
    merged = merge_instances(nested)
    assert len(merged) == 1
    assert merged.pred_boxes.tensor[0].tolist() == [10, 10, 16, 16]
    assert int(merged.pred_masks[0].sum()) == 36


def test_neighbours_that_touch_stay_apart_and_rules_can_be_off():
    touching = instances([(0, 0, 10, 10), (10, 0, 20, 10)], [0.9, 0.8])
    assert len(merge_instances(touching)) == 2
    nested = instances([(0, 0, 20, 20), (2, 2, 6, 6)], [0.9, 0.8])  # IoU 0.04, contained
    assert len(merge_instances(nested)) == 1
    assert len(merge_instances(nested, iou=0.5, containment=1.1)) == 2  # containment off
    assert len(merge_instances(instances([], []))) == 0


def test_low_scores_are_absorbed_but_never_grow_a_kept_mask():
    # merging everything then applying the score threshold must equal thresholding first
    stacked = instances([(5, 5, 20, 20), (8, 8, 23, 23), (30, 30, 36, 36)], [0.9, 0.2, 0.1])
    merged = merge_instances(stacked, iou=0.3, containment=0.8, min_union_score=0.3)
    assert torch.allclose(merged.scores, torch.tensor([0.9, 0.1]))  # 0.2 absorbed, 0.1 apart
    assert torch.equal(merged.pred_masks[0], stacked.pred_masks[0])  # not grown by the 0.2
    kept = merged[merged.scores >= 0.3]
    first = merge_instances(stacked[stacked.scores >= 0.3], iou=0.3, containment=0.8)
    assert torch.equal(kept.pred_masks, first.pred_masks)
    assert torch.equal(kept.pred_boxes.tensor, first.pred_boxes.tensor)
    grown = merge_instances(stacked, iou=0.3, containment=0.8, mask="union")  # without it
    assert grown.pred_masks[0].sum() > stacked.pred_masks[0].sum()
