"""The tumor evaluator: the metrics clinicians and medical-imaging papers report.

Per image, from the union of predicted masks scoring at least ``TUMOR.EVAL.SCORE_THRESHOLD``
against the union of ground-truth masks:

* Dice and IoU of the tumor region (:mod:`tumor_det.evaluation.metrics`, the one overlap
  primitive);
* 95th-percentile Hausdorff distance (MONAI's ``compute_hausdorff_distance``), in mm when the
  pixel spacing is known (``pixel_spacing`` in the dataset record or
  ``TUMOR.EVAL.PIXEL_SPACING_MM``), else in pixels; only where both regions are non-empty;
* lesions: a ground-truth instance is found when some prediction overlaps it with IoU ≥
  ``TUMOR.EVAL.LESION_IOU`` (pycocotools' mask IoU); a prediction that overlaps no ground-truth
  lesion so is a false positive.

Box-level lesion metrics, for every image (from the ground-truth boxes, so box-only datasets
such as YOLO labels are scored too): a ground-truth box is found at box IoU >= 0.5
(``box_sensitivity50``, and per tumor type ``box_sensitivity50/<class>``) or at any overlap
(``box_sensitivity_any``); ``type_accuracy`` is the share of tumors found at IoU >= 0.5 whose
best-overlapping detection has the right class. Images whose ground truth is boxes only have
no Dice/IoU/HD95 (NaN, left out of the means) and their false positives are detections
overlapping no true box with box IoU >= ``TUMOR.EVAL.LESION_IOU``.

Aggregates: ``dice``/``iou`` (mean over images with tumor), ``dice_all`` (all images; an empty
prediction on a tumor-free image scores 1), lesion ``sensitivity``, ``fp_per_image``,
image-level ``image_sensitivity`` and ``image_specificity`` (tumor-free images), ``hd95`` (mean)
and ``hd95_median``. A per-image CSV is written to the output folder.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import OrderedDict

from tumor_det.evaluation.metrics import confusion
from tumor_det.evaluation.metrics import dice as dice_of
from tumor_det.evaluation.metrics import iou as iou_of
from tumor_det.evaluation.threshold import score_threshold
from tumor_det.utils.atomic import write_text

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances, pairwise_iou
from detectron2.utils import comm
from monai.metrics import compute_hausdorff_distance

logger = logging.getLogger(__name__)


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """Decode one Detectron2/COCO annotation's segmentation (polygons or RLE) to a bool mask."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rles = mask_util.frPyObjects(seg, height, width)
        rle = mask_util.merge(rles)
    elif isinstance(seg.get("counts"), list):
        rle = mask_util.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_util.decode(rle).astype(bool)


def _monai(fn, pred: np.ndarray, gt: np.ndarray, **kwargs) -> float:
    y_pred = torch.from_numpy(pred[None, None].astype(np.float32))
    y = torch.from_numpy(gt[None, None].astype(np.float32))
    return float(fn(y_pred, y, **kwargs).reshape(-1)[0])


def region_metrics(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float] | None
                   ) -> dict[str, float]:
    """Dice, IoU and HD95 of two bool masks (MONAI's; HD95 is NaN unless both are non-empty).

    Two empty masks score Dice = IoU = 1 (MONAI's ``ignore_empty=False``).
    """
    counts = confusion(pred, gt)  # the one overlap primitive (tumor_det.evaluation.metrics)
    dice, iou = dice_of(counts), iou_of(counts)
    hd95 = math.nan
    if gt.any() and pred.any():  # MONAI would warn and return inf/NaN
        hd95 = _monai(compute_hausdorff_distance, pred, gt, include_background=True,
                      percentile=95, spacing=list(spacing) if spacing else None)
    return {"dice": dice, "iou": iou, "hd95": hd95}


def _rles(masks: list[np.ndarray]) -> list[dict]:
    return mask_util.encode(np.asfortranarray(np.stack(masks, axis=-1).astype(np.uint8)))


def lesion_iou(pred_masks: list[np.ndarray], gt_masks: list[np.ndarray]) -> np.ndarray:
    """IoU of each prediction (rows) with each ground-truth lesion (columns), by pycocotools
    (0 where both masks are empty)."""
    if not pred_masks or not gt_masks:  # pycocotools rejects empty lists
        return np.zeros((len(pred_masks), len(gt_masks)))
    return np.asarray(mask_util.iou(_rles(pred_masks), _rles(gt_masks), [0] * len(gt_masks)))


def lesion_matches(pred_masks: list[np.ndarray], gt_masks: list[np.ndarray], min_iou: float
                   ) -> tuple[int, int]:
    """Return (ground-truth lesions found, false-positive predictions)."""
    hit = lesion_iou(pred_masks, gt_masks) >= min_iou
    return int(hit.any(axis=0).sum()), int((~hit.any(axis=1)).sum())


def box_matches(pred_boxes: torch.Tensor, pred_classes: torch.Tensor, annos: list[dict],
                min_iou: float) -> dict:
    """Box-level matching of one image: per true box, whether a detection overlaps it with box
    IoU >= 0.5, >= ``min_iou`` and > 0, and the class of its best-overlapping detection; the
    detections overlapping no true box with IoU >= ``min_iou`` (false positives)."""
    gt = torch.tensor([_gt_box(a) for a in annos], dtype=torch.float32).reshape(-1, 4)
    iou = pairwise_iou(Boxes(pred_boxes.float()), Boxes(gt)).numpy()  # preds x gts
    best = iou.max(axis=0) if len(pred_boxes) else np.zeros(len(annos))
    lesions = [{"category_id": int(a["category_id"]), "found50": bool(b >= 0.5),
                "found_any": bool(b > 0),
                "predicted_class": int(pred_classes[iou[:, k].argmax()]) if b > 0 else -1}
               for k, (a, b) in enumerate(zip(annos, best, strict=True))]
    fp = int((iou.max(axis=1) < min_iou).sum()) if len(annos) else len(pred_boxes)
    return {"box_found50": sum(lz["found50"] for lz in lesions),
            "box_found_any": sum(lz["found_any"] for lz in lesions),
            "box_found_min_iou": int((best >= min_iou).sum()) if len(pred_boxes) else 0,
            "box_false_positives": fp, "lesions": lesions}


def _gt_box(anno: dict) -> list[float]:
    """An annotation's XYXY box (from its outline when it has no ``bbox``)."""
    if "bbox" in anno:
        return BoxMode.convert(list(anno["bbox"]), anno.get("bbox_mode", BoxMode.XYWH_ABS),
                               BoxMode.XYXY_ABS)
    seg = anno["segmentation"]
    rle = mask_util.merge(seg) if isinstance(seg, list) and isinstance(seg[0], dict) else seg
    if isinstance(rle, list):  # polygons
        xy = np.concatenate([np.asarray(p, float).reshape(-1, 2) for p in rle])
        return [*xy.min(axis=0).tolist(), *xy.max(axis=0).tolist()]
    x, y, w, h = mask_util.toBbox(rle).tolist()
    return [x, y, x + w, y + h]


def _pred_boxes(inst: Instances) -> torch.Tensor:
    if inst.has("pred_boxes"):
        return inst.pred_boxes.tensor
    if inst.has("pred_masks"):  # outputs without boxes: the masks' boxes
        return BitMasks(inst.pred_masks.bool()).get_bounding_boxes().tensor
    return torch.zeros((0, 4))


def _pred_classes(inst: Instances) -> torch.Tensor:
    if inst.has("pred_classes"):
        return inst.pred_classes
    return torch.zeros(len(inst), dtype=torch.int64)


def aggregate_boxes(records: list[dict], lesions: list[dict], classes: list[str]
                    ) -> dict[str, float]:
    """Box-level aggregates (module docstring): sensitivities, per type, type accuracy."""
    def share(items: list[bool]) -> float:
        return float(np.mean(items)) if items else math.nan

    out = {"box_sensitivity50": share([lz["found50"] for lz in lesions]),
           "box_sensitivity_any": share([lz["found_any"] for lz in lesions]),
           "box_fp_per_image": (sum(r["box_false_positives"] for r in records) / len(records)
                                if records else math.nan)}
    if len(classes) > 1:
        for k, name in enumerate(classes):
            out[f"box_sensitivity50/{name}"] = share(
                [lz["found50"] for lz in lesions if lz["category_id"] == k])
        out["type_accuracy"] = share([lz["predicted_class"] == lz["category_id"]
                                      for lz in lesions if lz["found50"]])
    return out


def aggregate(records: list[dict]) -> dict[str, float]:
    """Aggregate per-image records (see module docstring) into the reported metrics."""

    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    positives = [r for r in records if r["gt_lesions"] > 0]
    negatives = [r for r in records if r["gt_lesions"] == 0]
    hd = [r["hd95"] for r in records if not math.isnan(r["hd95"])]
    total_lesions = sum(r["gt_lesions"] for r in records)
    return {
        "dice": mean([r["dice"] for r in positives]),
        "iou": mean([r["iou"] for r in positives]),
        "dice_all": mean([r["dice"] for r in records]),
        "sensitivity": (sum(r["found_lesions"] for r in records) / total_lesions
                        if total_lesions else math.nan),
        "fp_per_image": (sum(r["false_positives"] for r in records) / len(records)
                         if records else math.nan),
        "image_sensitivity": mean([float(r["pred_lesions"] > 0) for r in positives]),
        "image_specificity": mean([float(r["pred_lesions"] == 0) for r in negatives]),
        "hd95": float(np.mean(hd)) if hd else math.nan,
        "hd95_median": float(np.median(hd)) if hd else math.nan,
        "images": float(len(records)),
        "tumor_images": float(len(positives)),
    }


def per_patient(records: list[dict]) -> list[dict]:
    """One row per patient (records carrying ``patient_id``): Dice of the patient's slices taken
    together (2·Σ overlap / Σ(predicted + true area), the stack of their slices as one volume,
    how nnU-Net and BraTS score a case), lesions found / true, false positives per slice."""
    patients: dict[str, list[dict]] = {}
    for r in records:
        if r.get("patient_id") not in (None, ""):
            patients.setdefault(str(r["patient_id"]), []).append(r)
    rows = []
    for patient, rs in sorted(patients.items()):
        overlap = sum(r["overlap_px"] for r in rs)
        areas = sum(r["pred_area_px"] + r["gt_area_px"] for r in rs)
        true_area = sum(r["gt_area_px"] for r in rs)
        true = sum(r["gt_lesions"] for r in rs)
        rows.append({
            "patient_id": patient, "slices": len(rs), "gt_lesions": true,
            "found_lesions": sum(r["found_lesions"] for r in rs),
            "false_positives": sum(r["false_positives"] for r in rs),
            # both empty: MONAI's 1; boxes-only ground truth: no Dice
            "dice": (math.nan if any(r.get("scored_on") == "box" for r in rs)
                     else dice_of((overlap, areas - 2 * overlap - (true_area - overlap),
                                   true_area - overlap))),
            "sensitivity": sum(r["found_lesions"] for r in rs) / true if true else math.nan,
        })
    return rows


def aggregate_patients(rows: list[dict]) -> dict[str, float]:
    """Means over patients (tumor patients for Dice and sensitivity)."""
    tumor = [r for r in rows if r["gt_lesions"] > 0]
    return {
        "patient_dice": float(np.mean([r["dice"] for r in tumor])) if tumor else math.nan,
        "patient_sensitivity": (float(np.mean([r["sensitivity"] for r in tumor]))
                                if tumor else math.nan),
        "patient_fp_per_slice": (sum(r["false_positives"] for r in rows)
                                 / sum(r["slices"] for r in rows) if rows else math.nan),
        "patients": float(len(rows)),
    }


class TumorEvaluator(DatasetEvaluator):
    """Per-image tumor metrics for a registered dataset (see module docstring)."""

    def __init__(self, dataset_name: str, score_threshold: float = 0.5, lesion_iou: float = 0.1,
                 pixel_spacing_mm: float = 0.0, output_dir: str | None = None) -> None:
        self._dataset_name = dataset_name
        self._score_threshold = score_threshold
        self._lesion_iou = lesion_iou
        self._default_spacing = pixel_spacing_mm
        self._output_dir = output_dir
        self._gt = {d["image_id"]: d for d in DatasetCatalog.get(dataset_name)}
        self._classes = list(MetadataCatalog.get(dataset_name).get("thing_classes", []))
        self._records: list[dict] = []
        self._lesions: list[dict] = []

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None):
        e = cfg.TUMOR.EVAL
        return cls(dataset_name, score_threshold(cfg), e.LESION_IOU, e.PIXEL_SPACING_MM,
                   output_dir)

    def reset(self) -> None:
        self._records, self._lesions = [], []

    def _spacing(self, record: dict) -> tuple[float, float] | None:
        spacing = record.get("pixel_spacing")
        if spacing:
            return float(spacing[0]), float(spacing[1])
        if self._default_spacing > 0:
            return self._default_spacing, self._default_spacing
        return None

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            record = self._gt[inp["image_id"]]
            h, w = record["height"], record["width"]
            annos = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
            outlined = all(a.get("segmentation") for a in annos)
            inst = out["instances"].to("cpu")
            keep = inst.scores >= self._score_threshold
            boxes = box_matches(_pred_boxes(inst[keep]), _pred_classes(inst[keep]), annos,
                                self._lesion_iou)
            self._lesions.extend(boxes.pop("lesions"))
            spacing = self._spacing(record)
            row = {
                "file_name": os.path.basename(record["file_name"]),
                "image_id": inp["image_id"],
                "patient_id": record.get("patient_id", ""),
                "scored_on": "mask" if outlined else "box",
                "gt_lesions": len(annos),
                "pred_lesions": int(keep.sum()),
                **boxes,
                "hd95_unit": "mm" if spacing else "px",
            }
            if outlined:
                gt_masks = [annotation_mask(a, h, w) for a in annos]
                pred_masks = [m for m in inst.pred_masks[keep].numpy()] if inst.has(
                    "pred_masks") else []
                pred_union = np.any(pred_masks, axis=0) if pred_masks else np.zeros((h, w), bool)
                gt_union = np.any(gt_masks, axis=0) if gt_masks else np.zeros((h, w), bool)
                found, false_pos = lesion_matches(pred_masks, gt_masks, self._lesion_iou)
                row.update(found_lesions=found, false_positives=false_pos,
                           gt_area_px=int(gt_union.sum()), pred_area_px=int(pred_union.sum()),
                           overlap_px=int((pred_union & gt_union).sum()),
                           **region_metrics(pred_union, gt_union, spacing))
            else:  # boxes only: lesions by box overlap, no region metrics
                row.update(found_lesions=row["box_found_min_iou"],
                           false_positives=row["box_false_positives"], gt_area_px=0,
                           pred_area_px=0, overlap_px=0, dice=math.nan, iou=math.nan,
                           hd95=math.nan)
            self._records.append(row)

    def evaluate(self):
        records = [r for part in comm.gather(self._records, dst=0) for r in part]
        lesions = [r for part in comm.gather(self._lesions, dst=0) for r in part]
        if not comm.is_main_process():
            return {}
        if not records:
            logger.warning("TumorEvaluator on %s got no predictions", self._dataset_name)
            return {}
        metrics = aggregate(records)
        metrics.update(aggregate_boxes(records, lesions, self._classes))
        patients = per_patient(records)
        if patients:
            metrics.update(aggregate_patients(patients))
        if self._output_dir:
            write_text(os.path.join(self._output_dir, "tumor_metrics_per_image.csv"),
                       _csv(sorted(records, key=lambda r: str(r["image_id"]))))
            if patients:
                write_text(os.path.join(self._output_dir, "tumor_metrics_per_patient.csv"),
                           _csv(patients))
        unit = records[0]["hd95_unit"]
        logger.info("Tumor metrics on %s (HD95 in %s): %s", self._dataset_name, unit,
                    ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return OrderedDict(tumor=metrics)


def _csv(rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()
