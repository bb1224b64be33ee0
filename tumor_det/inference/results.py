"""What the predictor returns: :class:`TumorPrediction` (a 2D image) and :class:`VolumePrediction`
(a volume: 3D lesions, masks in the input's grid), and how they are built from detections.

Typed results, everything on the CPU: :mod:`tumor_det.splash` writes them,
:class:`~tumor_det.inference.predictor.TumorPredictor` makes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tumor_det.inference.lesions import Detections, Lesion, LesionMap, LesionRules, find_lesions
from tumor_det.io.geometry import Volume, from_display_slices

import numpy as np
import torch
from detectron2.structures import Instances

logger = logging.getLogger(__name__)

Spacing = tuple[float, float] | None


@dataclass
class TumorPrediction:
    """The prediction for one 2D image (original resolution, everything on the CPU)."""

    image: np.ndarray  # the 8-bit BGR image the model saw (before resizing)
    instances: Instances  # detections with score >= threshold (pred_boxes/classes/masks)
    mask: np.ndarray  # bool HxW: union of the instances' masks
    scores: list[float]
    areas_px: list[int]  # per instance
    pixel_spacing: Spacing = None  # (row, column) mm
    #: uint8 HxW, 0-255: per pixel the highest mask probability of the instances (when asked)
    probability: np.ndarray | None = None

    @property
    def num_tumors(self) -> int:
        return len(self.scores)

    @property
    def area_px(self) -> int:
        """Pixels in the union mask."""
        return int(self.mask.sum())

    @property
    def area_mm2(self) -> float | None:
        """Area of the union mask in mm², or None when the pixel spacing is unknown."""
        if self.pixel_spacing is None:
            return None
        return self.area_px * self.pixel_spacing[0] * self.pixel_spacing[1]


@dataclass
class VolumePrediction:
    """A volume's prediction; ``mask`` and ``labels`` are in the input's grid, ``slices`` in
    display order. Lesions dropped by the :class:`~tumor_det.inference.lesions.LesionRules` are
    gone from the mask, the labels and the slices (not from ``probabilities``, the model's raw
    output)."""

    mask: np.ndarray  # bool, same shape as the input volume
    affine: np.ndarray
    voxel_volume_mm3: float
    slices: list[TumorPrediction]  # display slices of the RAS-canonical volume (inferior first)
    lesion_map: LesionMap
    #: float32 in [0, 1] in the input's grid: the highest mask probability per voxel (or None)
    probabilities: np.ndarray | None = field(default=None, repr=False)

    @property
    def lesions(self) -> list[Lesion]:
        """3D lesions (26-connected), ids 1..N by best score."""
        return self.lesion_map.lesions

    @property
    def labels(self) -> np.ndarray:
        """Instance label map in the input's grid: 0 background, lesion ids 1..N."""
        return self.lesion_map.labels

    @property
    def num_tumors(self) -> int:
        return len(self.lesions)

    @property
    def tumor_scores(self) -> list[float]:
        """Per lesion (id order): the best score of the detections forming it."""
        return [lesion.score for lesion in self.lesions]

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def volume_ml(self) -> float:
        """Tumor volume in mL: voxel count x voxel volume (mm³) / 1000."""
        return self.voxels * self.voxel_volume_mm3 / 1000.0

    @property
    def slice_range(self) -> tuple[int, int] | None:
        """First and last display slice (canonical, 0-based, inferior first) with tumor."""
        hits = [k for k, p in enumerate(self.slices) if p.mask.any()]
        return (hits[0], hits[-1]) if hits else None


def make_prediction(image: np.ndarray, instances: Instances, spacing: Spacing,
                    probability: np.ndarray | None = None) -> TumorPrediction:
    """The :class:`TumorPrediction` of ``image`` from its kept detections (CPU ``Instances``
    with bool or 0/1 ``pred_masks``)."""
    h, w = image.shape[:2]
    if len(instances):
        masks = instances.pred_masks.bool()
        instances.pred_masks = masks
        union = masks.any(dim=0).numpy()
        areas = [int(a) for a in masks.flatten(1).sum(dim=1)]
    else:
        union = np.zeros((h, w), bool)
        areas = []
    return TumorPrediction(
        image=image,
        instances=instances,
        mask=union,
        scores=[float(s) for s in instances.scores.float()],
        areas_px=areas,
        pixel_spacing=spacing,
        probability=probability,
    )


def _detections(pred: TumorPrediction) -> Detections:
    inst = pred.instances
    if not len(inst):
        return Detections(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, *pred.mask.shape), bool))
    return Detections(inst.scores.float().numpy(), inst.pred_classes.numpy(),
                      inst.pred_masks.bool().numpy())


def _keep(pred: TumorPrediction, keep: np.ndarray) -> TumorPrediction:
    """``pred`` without what lies outside ``keep`` (bool HxW: the kept lesions)."""
    inst = pred.instances
    if not len(inst) or keep[pred.mask].all():
        return pred
    kept = torch.from_numpy(keep)
    masks = inst.pred_masks.bool() & kept
    inst = inst[masks.flatten(1).any(dim=1)]
    inst.pred_masks = inst.pred_masks.bool() & kept
    return make_prediction(pred.image, inst, pred.pixel_spacing, pred.probability)


def volume_prediction(preds: list[TumorPrediction], volume: Volume, plane: str = "axial",
                      rules: LesionRules | None = None) -> VolumePrediction:
    """Stack slice predictions, link them into 3D lesions (:func:`find_lesions`), apply
    ``rules`` and map the masks into ``volume``'s grid."""
    lesion_map = find_lesions([_detections(p) for p in preds], volume, plane, rules)
    for lesion in lesion_map.dropped:
        logger.info("lesion dropped (slices %d-%d, %.4f mL): %s", *lesion.slices,
                    lesion.volume_ml, lesion.dropped)
    if lesion_map.dropped:
        preds = [_keep(p, lesion_map.display_labels[k] > 0) for k, p in enumerate(preds)]
    probabilities = None
    if preds and all(p.probability is not None for p in preds):
        stacked = np.stack([p.probability for p in preds])
        probabilities = from_display_slices(stacked, volume, plane).astype(np.float32) / 255.0
    return VolumePrediction(
        mask=lesion_map.labels > 0,
        affine=volume.affine,
        voxel_volume_mm3=volume.voxel_volume_mm3,
        slices=preds,
        lesion_map=lesion_map,
        probabilities=probabilities,
    )
