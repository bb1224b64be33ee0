"""How far an exported model's detections are from the PyTorch model's (same image).

Used by ``tools/export_model.py``'s check and ``tests/test_export.py``; mask overlap is
:func:`tumor_det.evaluation.metrics.mask_dice`, the one Dice.
"""

from __future__ import annotations

from tumor_det.evaluation.metrics import mask_dice

import torch
from detectron2.structures import Instances

__all__ = ["mask_dice", "parity"]


def parity(ref: Instances, other: Instances) -> dict:
    """How far ``other``'s post-processed detections are from ``ref``'s (same image).

    Detections are paired in score order. ``same_detections``: equal count and classes;
    ``max_score_diff``; ``min_mask_dice`` over the pairs (pasted bool masks);
    ``max_box_diff`` in pixels.
    """
    n = len(ref)
    same = n == len(other)
    out = {"detections": n, "other_detections": len(other), "same_detections": same,
           "max_score_diff": float("nan"), "min_mask_dice": float("nan"),
           "max_box_diff": float("nan")}
    if not same or n == 0:
        if same:
            out.update(max_score_diff=0.0, min_mask_dice=1.0, max_box_diff=0.0)
        return out
    ra, oa = torch.argsort(ref.scores, descending=True), torch.argsort(other.scores,
                                                                        descending=True)
    r, o = ref[ra], other[oa]
    out["same_detections"] = bool(torch.equal(r.pred_classes.cpu(), o.pred_classes.cpu()))
    out["max_score_diff"] = float((r.scores.float().cpu() - o.scores.float().cpu()).abs().max())
    out["max_box_diff"] = float((r.pred_boxes.tensor.float().cpu()
                                 - o.pred_boxes.tensor.float().cpu()).abs().max())
    if r.has("pred_masks") and o.has("pred_masks"):
        rm, om = r.pred_masks.bool().cpu().numpy(), o.pred_masks.bool().cpu().numpy()
        out["min_mask_dice"] = min(mask_dice(x, y) for x, y in zip(rm, om, strict=True))
    return out
