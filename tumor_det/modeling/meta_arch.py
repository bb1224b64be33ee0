"""The model: Detectron2's Mask R-CNN with one detection per tumor, and its test-time augmentation.

:class:`TumorRCNN` is ``GeneralizedRCNN`` (same modules, same parameter names, so its
checkpoints and Detectron2's load into either) whose post-processed output goes through
:func:`~tumor_det.modeling.postprocessing.merge_instances` when
``TUMOR.MERGE.ENABLED``. Every consumer of
``model(inputs)`` (``COCOEvaluator``, ``TumorEvaluator``, their CSVs, overlays) sees merged
instances. ``inference(..., do_postprocess=False)`` returns Detectron2's raw per-RoI output
unchanged: the merge needs full-image masks.

:func:`with_tta` wraps a model in Detectron2's ``GeneralizedRCNNWithTTA`` (``TEST.AUG``: resized
and flipped copies, boxes merged by NMS, masks averaged), with the same merge after it;
:meth:`TumorRCNNWithTTA.raw_inference` stops before the masks are pasted (what
:class:`tumor_det.inference.predictor.TumorPredictor` post-processes itself with ``tta=True``).

Registered in ``META_ARCH_REGISTRY`` on import; :mod:`tumor_det.config.config`
imports this module, so
every process that makes a tumor-det config can build it.
"""

from __future__ import annotations

from tumor_det.modeling import mask_head  # noqa: F401  (registers TumorMaskHead)
from tumor_det.modeling.postprocessing import merge_instances

from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, GeneralizedRCNNWithTTA
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

__all__ = ["TumorRCNN", "TumorRCNNWithTTA", "with_tta"]


class _Merge:
    """``merge_instances`` with the ``TUMOR.MERGE`` settings (``enabled`` False: a no-op)."""

    def __init__(self, enabled: bool = True, iou: float = 0.5, containment: float = 0.8,
                 min_union_score: float = 0.0, mask: str = "best"):
        self.enabled, self.iou, self.containment = enabled, iou, containment
        self.min_union_score, self.mask = min_union_score, mask

    @classmethod
    def from_config(cls, cfg: CfgNode) -> _Merge:
        merge = cfg.TUMOR.MERGE
        # detections below the operating point are absorbed but never grow a kept mask, so the
        # evaluators (which threshold after the model) see what TumorPredictor (which
        # thresholds first, then merges) reports
        return cls(merge.ENABLED, merge.IOU, merge.CONTAINMENT, cfg.TUMOR.EVAL.SCORE_THRESHOLD,
                   merge.MASK)

    def __call__(self, results: list[dict]) -> list[dict]:
        if self.enabled:
            for result in results:
                result["instances"] = merge_instances(result["instances"], self.iou,
                                                      self.containment, self.min_union_score,
                                                      self.mask)
        return results


@META_ARCH_REGISTRY.register()
class TumorRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` whose post-processed detections are merged class-agnostically by
    mask IoU/containment (``TUMOR.MERGE``): one tumor, one detection."""

    @configurable
    def __init__(self, *, merge_enabled: bool = True, merge_iou: float = 0.5,
                 merge_containment: float = 0.8, merge_min_union_score: float = 0.0,
                 merge_mask: str = "best", **kwargs):
        super().__init__(**kwargs)
        self.merge = _Merge(merge_enabled, merge_iou, merge_containment, merge_min_union_score,
                            merge_mask)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        ret = super().from_config(cfg)
        merge = _Merge.from_config(cfg)
        ret.update(merge_enabled=merge.enabled, merge_iou=merge.iou,
                   merge_containment=merge.containment,
                   merge_min_union_score=merge.min_union_score, merge_mask=merge.mask)
        return ret

    def inference(self, batched_inputs, detected_instances=None, do_postprocess: bool = True):
        results = super().inference(batched_inputs, detected_instances, do_postprocess)
        # Raw outputs (do_postprocess=False: what GeneralizedRCNNWithTTA and TumorPredictor
        # ask for) have per-RoI masks; the merge needs the pasted full-image ones.
        return self.merge(results) if do_postprocess else results


class TumorRCNNWithTTA(GeneralizedRCNNWithTTA):
    """Detectron2's ``GeneralizedRCNNWithTTA``, then the ``TUMOR.MERGE`` merge.

    The wrapped model runs with ``do_postprocess=False`` inside TTA (so a :class:`TumorRCNN`
    does not merge there); the merge runs once on the combined full-image result.
    """

    def __init__(self, cfg: CfgNode, model, tta_mapper=None, batch_size: int = 3):
        super().__init__(cfg, model, tta_mapper, batch_size)
        self.merge = _Merge.from_config(cfg)

    def raw_inference(self, input: dict) -> Instances:
        """One image's TTA detections before pasting the masks: Detectron2's
        ``_inference_one_image`` up to its ``detector_postprocess``.

        ``input`` is a model input dict at the original size (``"image"``: CHW tensor on the
        CPU in ``INPUT.FORMAT``, ``"height"``, ``"width"``). The boxes of every augmented copy,
        mapped back to that size, are merged by NMS; with ``MASK_ON`` each merged box gets the
        copies' per-RoI mask probabilities averaged (``pred_masks`` (N, 1, M, M), un-flipped).
        ``image_size`` is (height, width), so ``detector_postprocess(result, height, width)``
        pastes the masks as after a plain ``inference(..., do_postprocess=False)``.
        """
        orig_shape = (input["height"], input["width"])
        augmented_inputs, tfms = self._get_augmented_inputs(input)
        with self._turn_off_roi_heads(["mask_on", "keypoint_on"]):
            all_boxes, all_scores, all_classes = self._get_augmented_boxes(augmented_inputs, tfms)
        merged = self._merge_detections(all_boxes, all_scores, all_classes, orig_shape)
        if self.cfg.MODEL.MASK_ON:
            augmented_instances = self._rescale_detected_boxes(augmented_inputs, merged, tfms)
            outputs = self._batch_inference(augmented_inputs, augmented_instances)
            del augmented_inputs, augmented_instances  # the copies' feature maps can be large
            merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
        return merged

    def _inference_one_image(self, input):
        instances = self.raw_inference(input)
        if self.cfg.MODEL.MASK_ON:
            instances = detector_postprocess(instances, input["height"], input["width"])
        return self.merge([{"instances": instances}])[0]


def with_tta(cfg: CfgNode, model, batch_size: int = 3) -> TumorRCNNWithTTA:
    """``model`` (a ``GeneralizedRCNN``, possibly in DDP) with ``cfg.TEST.AUG`` test-time
    augmentation and ``cfg.TUMOR.MERGE``; call it like the model (eval mode, no grad)."""
    return TumorRCNNWithTTA(cfg, model, batch_size=batch_size)
