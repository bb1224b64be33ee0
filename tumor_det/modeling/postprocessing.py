"""After the model: one tumor, one detection.

Mask R-CNN's NMS works per class on boxes, so one tumor can come out as several stacked
detections (a large box and smaller ones inside it, or the same outline under two tumor types).
:func:`merge_instances` merges them class-agnostically by their masks. Detectron2 has no such
step (its NMS is box-based and per class), hence these small functions.

The kept detection keeps its own mask and box (``mask="best"``, the default): merging never
grows a tumor. Measured on real held-out slices (benchmarks/RESULTS.md, "Real data"), the
former rule (``mask="union"``: the members' union) grew a small true tumor into a large false
detection around it.
"""

from __future__ import annotations

import torch
from detectron2.structures import BitMasks, Boxes, Instances


def merge_groups(masks: torch.Tensor, scores: torch.Tensor, iou: float = 0.5,
                 containment: float = 0.8, min_union_score: float = 0.0) -> list[list[int]]:
    """Which detections merge: groups of indices into ``masks`` (N, H, W), one per kept
    detection, the kept (highest-scoring) one first, groups ordered by that score.

    A detection joins the first kept, higher-scoring one whose mask it overlaps with IoU >=
    ``iou`` or of whose smaller mask >= ``containment`` lies inside the other. A detection
    scoring below ``min_union_score`` is absorbed (dropped) all the same, but is not listed in
    the group, so it never grows a kept mask: merging then thresholding gives the same as
    thresholding then merging. ``iou`` or ``containment`` above 1 turn that rule off.
    """
    order = torch.argsort(scores, descending=True).tolist()
    flat = masks.flatten(1).float()
    inter = flat @ flat.T  # N x N pixel counts, without an N x N x H x W tensor
    area = inter.diagonal()
    mask_iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1)
    contained = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1)
    overlaps = (mask_iou >= iou) | (contained >= containment)
    groups: list[list[int]] = []
    for i in order:
        group = next((g for g in groups if overlaps[g[0], i]), None)
        if group is None:
            groups.append([i])
        elif scores[i] >= min_union_score:
            group.append(i)
    return groups


MASK_RULES = ("best", "union")


def merge_instances(instances: Instances, iou: float = 0.5, containment: float = 0.8,
                    min_union_score: float = 0.0, mask: str = "best") -> Instances:
    """Merge detections whose masks overlap (class-agnostic), highest score first.

    The rule is :func:`merge_groups`'; :func:`apply_groups` builds the result (``mask``: the
    kept detection's own mask, or the union of the group's). Needs ``pred_masks`` as full-image
    bool/0-1 masks (Detectron2's post-processed output); instances without masks are returned
    unchanged. The result is ordered by score.
    """
    if len(instances) < 2 or not instances.has("pred_masks"):
        return instances
    groups = merge_groups(instances.pred_masks.bool(), instances.scores, iou, containment,
                          min_union_score)
    return apply_groups(instances, groups, union=mask == "union")


def apply_groups(instances: Instances, groups: list[list[int]], union: bool = False
                 ) -> Instances:
    """One detection per group (:func:`merge_groups`): the first member's score, class and other
    fields, and its mask and box; with ``union``, the union of the members' masks and that
    mask's box (the first member's box when that mask is empty)."""
    merged = instances[[g[0] for g in groups]]
    if not union or all(len(g) == 1 for g in groups):
        return merged
    full = instances.pred_masks.bool()
    union_masks = torch.stack([full[g].any(dim=0) for g in groups])
    merged.pred_masks = union_masks.to(instances.pred_masks.dtype)
    if merged.has("pred_boxes"):
        boxes = BitMasks(union_masks).get_bounding_boxes().tensor.to(merged.pred_boxes.tensor)
        empty = ~union_masks.flatten(1).any(dim=1)
        boxes[empty] = merged.pred_boxes.tensor[empty]
        merged.pred_boxes = Boxes(boxes)
    return merged
