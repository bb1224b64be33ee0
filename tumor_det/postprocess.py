"""After the model: one tumor, one detection.

Mask R-CNN's NMS works per class on boxes, so one tumor can come out as several stacked
detections (a large box and smaller ones inside it, or the same outline under two tumor types).
:func:`merge_instances` merges them class-agnostically by their masks. Detectron2 has no such
step (its NMS is box-based and per class), hence this small function.
"""

from __future__ import annotations

import torch
from detectron2.structures import Boxes, Instances


def merge_instances(instances: Instances, iou: float = 0.5, containment: float = 0.8
                    ) -> Instances:
    """Merge detections whose masks overlap (class-agnostic), highest score first.

    A detection joins a kept, higher-scoring one when their mask IoU is at least ``iou`` or when
    at least ``containment`` of the smaller mask lies inside the other. The kept detection keeps
    its score and class, its mask becomes the union, and its box the union mask's box. Needs
    ``pred_masks`` as full-image bool/0-1 masks (Detectron2's post-processed output); instances
    without masks are returned unchanged. ``iou`` or ``containment`` above 1 turn that rule off.
    """
    if len(instances) < 2 or not instances.has("pred_masks"):
        return instances
    order = torch.argsort(instances.scores, descending=True)
    instances = instances[order]
    masks = instances.pred_masks.bool().flatten(1)
    area = masks.sum(dim=1).float()
    inter = (masks[:, None, :] & masks[None, :, :]).sum(dim=2).float()
    union = area[:, None] + area[None, :] - inter
    mask_iou = inter / union.clamp(min=1)
    contained = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1)
    overlaps = (mask_iou >= iou) | (contained >= containment)

    owner = list(range(len(instances)))  # index of the kept detection each one joins
    kept: list[int] = []
    for i in range(len(instances)):
        target = next((k for k in kept if overlaps[k, i]), None)
        if target is None:
            kept.append(i)
        else:
            owner[i] = target
    if len(kept) == len(instances):
        return instances
    merged = instances[kept]
    full = instances.pred_masks.bool()
    union_masks = torch.stack([full[[i for i in range(len(owner)) if owner[i] == k]].any(dim=0)
                               for k in kept])
    merged.pred_masks = union_masks.to(instances.pred_masks.dtype)
    if merged.has("pred_boxes"):
        merged.pred_boxes = Boxes(_mask_boxes(union_masks, merged.pred_boxes.tensor))
    return merged


def _mask_boxes(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (pixel edges) of bool masks (N, H, W); an empty mask keeps its ``boxes`` row."""
    boxes = boxes.clone()
    for n, mask in enumerate(masks):
        ys = torch.nonzero(mask.any(dim=1)).flatten()
        xs = torch.nonzero(mask.any(dim=0)).flatten()
        if len(xs):
            boxes[n] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=boxes.dtype)
    return boxes
