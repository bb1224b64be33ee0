"""Merge detections that carry mask probabilities: within one model, and across an ensemble.

Detections may carry ``mask_probs``: uint8 (N, H, W) full-image mask probabilities x 255 (what
:func:`detectron2.layers.mask_ops.paste_masks_in_image` gives with ``threshold=-1``; a binary
mask pixel, probability >= 0.5, is >= 127 there).

* :func:`merge_with_probabilities`: :func:`tumor_det.modeling.postprocessing.merge_instances`
  (class-agnostic merge by mask IoU/containment; ``mask="best"``: the kept detection keeps its
  own mask and probabilities; ``"union"``: the members' union mask and, at each pixel, their
  highest probability).
* :func:`fuse_models`: the detections of several models (e.g. one per cross-validation fold) as
  one set. They are concatenated and merged by the same rule; a merged detection keeps its
  highest-scoring member's score and class. Its mask probability is, at each pixel, the mean
  over the models that contributed members of each model's probability (its kept member's, or
  with ``mask="union"`` its members' highest) (nnU-Net
  averages its folds' probabilities; here only over the models that found the tumor, so a tumor
  found by one model only is kept as that model found it). Its mask is where that mean is at least
  127/255 (the 8-bit form of Detectron2's 0.5: the pixels every contributing model marks are
  kept); a detection from one model only keeps that model's merged mask exactly; when the mean
  leaves nothing, the highest-scoring member's mask is kept. ``votes`` counts the models.
"""

from __future__ import annotations

from collections.abc import Sequence

from tumor_det.modeling.postprocessing import apply_groups, merge_groups

import torch
from detectron2.structures import BitMasks, Boxes, Instances

BINARY_PROB = 127  # p >= 0.5 on the 0-255 scale of paste_masks_in_image (it truncates 255p)


def merged_with_groups(instances: Instances, iou: float = 0.5, containment: float = 0.8,
                       mask: str = "best") -> tuple[Instances, list[list[int]]]:
    """:func:`~tumor_det.modeling.postprocessing.merge_instances`, and its groups (indices into
    ``instances``, the kept detection first)."""
    if not len(instances):
        return instances, []
    groups = merge_groups(instances.pred_masks.bool(), instances.scores, iou, containment)
    return apply_groups(instances, groups, union=mask == "union"), groups


def merge_with_probabilities(instances: Instances, iou: float = 0.5, containment: float = 0.8,
                             mask: str = "best") -> Instances:
    """:func:`merge_instances`; each merged detection's ``mask_probs`` is its kept member's
    (``mask="union"``: its members' maximum)."""
    merged, groups = merged_with_groups(instances, iou, containment, mask)
    if mask == "union" and len(merged) < len(instances):
        merged.mask_probs = torch.stack([instances.mask_probs[g].amax(dim=0) for g in groups])
    return merged


def fuse_models(per_model: Sequence[Instances], iou: float = 0.5, containment: float = 0.8,
                mask: str = "best") -> Instances:
    """One set of detections from several models' detections of one image (module doc).

    Every input needs ``pred_masks`` and ``mask_probs``; the result also has ``votes``.
    """
    tagged = []
    for m, inst in enumerate(per_model):
        inst = Instances(inst.image_size, **inst.get_fields())
        inst.model_index = torch.full((len(inst),), m, dtype=torch.long)
        tagged.append(inst)
    every = Instances.cat(tagged)
    fused, groups = merged_with_groups(every, iou, containment, mask)
    if not len(fused):
        fused.votes = torch.zeros(0, dtype=torch.long)
        fused.remove("model_index")
        return fused
    masks, probs, votes = list(fused.pred_masks.bool()), [], []
    boxes = fused.pred_boxes.tensor.clone()
    for k, group in enumerate(groups):
        models = every.model_index[group].tolist()
        # each model's probability: its kept (highest-scoring: first in the group) member's,
        # or with the union rule its members' highest
        members = {model: [i for i, m in zip(group, models, strict=True) if m == model]
                   for model in sorted(set(models))}
        per = torch.stack([every.mask_probs[ids].amax(dim=0) if mask == "union"
                           else every.mask_probs[ids[0]] for ids in members.values()])
        votes.append(len(per))
        if len(per) == 1:  # one model: merge_instances' mask and box
            probs.append(per[0])
            continue
        mean = per.float().mean(dim=0)
        mask = mean >= BINARY_PROB
        masks[k] = mask if mask.any() else every.pred_masks[group[0]].bool()
        probs.append(mean.round().to(torch.uint8))
        boxes[k] = BitMasks(masks[k][None]).get_bounding_boxes().tensor[0].to(boxes.dtype)
    fused.pred_masks = torch.stack(masks)
    fused.mask_probs = torch.stack(probs)
    fused.pred_boxes = Boxes(boxes)
    fused.votes = torch.tensor(votes)
    fused.remove("model_index")
    return fused
