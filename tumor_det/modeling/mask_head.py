"""Mixed supervision: the mask loss only where a tumor has an outline.

Hu et al., "Learning to Segment Every Thing" (CVPR 2018) train the box branch on every instance
and the mask branch on those with masks. Here a box-only instance (a YOLO box, no outline) is
carried through Detectron2's mapper with its box as a placeholder mask and ``gt_has_mask``
False (:class:`tumor_det.data.augmentation.TumorDatasetMapper`); the RPN and the box head learn
from it like from any instance, and :class:`TumorMaskHead` leaves it out of the mask loss.
Detectron2's mask heads have no such switch, hence this subclass.

Registered in ``ROI_MASK_HEAD_REGISTRY`` on import (``MODEL.ROI_MASK_HEAD.NAME:
"TumorMaskHead"``); same layers and parameter names as ``MaskRCNNConvUpsampleHead``, so
checkpoints load into either. With every instance outlined it is that head exactly.
"""

from __future__ import annotations

import torch
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
    mask_rcnn_loss,
)
from detectron2.structures import Instances

__all__ = ["TumorMaskHead", "outlined"]


def outlined(instances: list[Instances]) -> tuple[torch.Tensor | None, list[Instances]]:
    """The foreground proposals whose ground truth has an outline: a boolean over the
    concatenated proposals (None when every one has) and the per-image kept instances."""
    if not instances or not all(i.has("gt_has_mask") for i in instances):
        return None, instances
    keep = torch.cat([i.gt_has_mask for i in instances])
    if bool(keep.all()):
        return None, instances
    return keep, [i[i.gt_has_mask] for i in instances]


@ROI_MASK_HEAD_REGISTRY.register()
class TumorMaskHead(MaskRCNNConvUpsampleHead):
    """``MaskRCNNConvUpsampleHead`` whose training loss skips box-only instances."""

    def forward(self, x: torch.Tensor, instances: list[Instances]):
        if not self.training:
            return super().forward(x, instances)
        keep, kept = outlined(instances)
        if keep is None:
            return super().forward(x, instances)
        logits = self.layers(x[keep]) if bool(keep.any()) else None
        if logits is None:
            # no outlined instance in the batch: a zero loss that still touches every weight
            # (DistributedDataParallel expects gradients for all parameters)
            return {"loss_mask": sum(p.sum() for p in self.parameters()) * 0.0}
        return {"loss_mask": mask_rcnn_loss(logits, kept, self.vis_period) * self.loss_weight}
