"""FROC and precision-recall from what an evaluation wrote: COCOEvaluator's
``coco_instances_results.json`` (every detection with its score and mask) against the dataset's
COCO annotation file (found through the registered dataset, :func:`ground_truth_file`).

FROC matching is the TumorEvaluator's (:mod:`tumor_det.evaluation.evaluator`): a true lesion is
found at score threshold t when a detection scoring >= t overlaps it with mask IoU >=
``TUMOR.EVAL.LESION_IOU``; a detection overlapping no true lesion so is a false positive.
Precision-recall is pycocotools' COCOeval (segm) at mask IoU 0.5, as AP50.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tumor_det.data import register_all
from tumor_det.evaluation.evaluator import annotation_mask, lesion_iou

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass
class Slice:
    """One evaluated slice: its image file, true lesion masks and scored predicted masks."""

    image_id: int
    file_name: str
    gt: list[np.ndarray]
    preds: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def union(self, masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        return np.any(masks, axis=0) if masks else np.zeros(shape, bool)

    def gt_union(self, shape: tuple[int, int]) -> np.ndarray:
        return self.union(self.gt, shape)

    def pred_union(self, threshold: float, shape: tuple[int, int]) -> np.ndarray:
        return self.union([m for s, m in self.preds if s >= threshold], shape)


def ground_truth_file(dataset: str, datasets_root: str | None) -> tuple[Path, Path] | None:
    """(COCO annotation file, image folder) of a registered dataset (``register_all`` under
    ``datasets_root``); None when it is not there."""
    from detectron2.data import MetadataCatalog

    with contextlib.suppress(OSError, ValueError):
        register_all(datasets_root or None)
    meta = MetadataCatalog.get(dataset)
    json_file, image_root = meta.get("json_file", None), meta.get("image_root", None)
    if json_file and Path(json_file).is_file():
        return Path(json_file), Path(image_root or Path(json_file).parent)
    return None


def _coco(json_file: str | os.PathLike) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(json_file))


def load_slices(json_file: str | os.PathLike, image_root: str | os.PathLike,
                results: str | os.PathLike | None) -> list[Slice]:
    """Every image of the annotation file with its true masks and the saved predictions."""
    gt = _coco(json_file)
    preds: dict[int, list[dict]] = {}
    if results is not None and Path(results).is_file():
        for p in json.loads(Path(results).read_text()):
            preds.setdefault(p["image_id"], []).append(p)
    slices = []
    for img in gt.dataset["images"]:
        h, w = img["height"], img["width"]
        anns = [a for a in gt.imgToAnns.get(img["id"], []) if not a.get("iscrowd", 0)
                and a.get("segmentation")]
        slices.append(Slice(img["id"], str(Path(image_root) / img["file_name"]),
                            [annotation_mask(a, h, w) for a in anns],
                            [(float(p["score"]), mask_util.decode(p["segmentation"]).astype(bool))
                             for p in preds.get(img["id"], []) if "segmentation" in p]))
    return slices


def froc(slices: list[Slice], min_iou: float) -> list[dict]:
    """FROC points (``threshold, fp_per_slice, sensitivity``) at every detection score, highest
    first, from a point with no detection (see module docstring)."""
    found_at, fp_scores = [], []  # per true lesion: best matching score; scores of FPs
    for s in slices:
        iou = lesion_iou([m for _, m in s.preds], s.gt)
        scores = np.array([sc for sc, _ in s.preds], float)
        hit = iou >= min_iou
        for k in range(len(s.gt)):
            found_at.append(scores[hit[:, k]].max() if hit[:, k].any() else -np.inf)
        fp_scores += scores[~hit.any(axis=1)].tolist() if len(s.gt) else scores.tolist()
    found, fps = np.array(found_at, float), np.array(fp_scores, float)
    n = max(len(slices), 1)
    thresholds = sorted({*found[np.isfinite(found)].tolist(), *fps.tolist()}, reverse=True)
    return [point(found, fps, n, t) for t in [np.inf, *thresholds]]


def point(found: np.ndarray, fps: np.ndarray, slices: int, t: float) -> dict:
    return {"threshold": float(t), "fp_per_slice": float((fps >= t).sum() / slices),
            "sensitivity": float((found >= t).mean()) if len(found) else float("nan")}


def froc_at(slices: list[Slice], min_iou: float, threshold: float) -> dict:
    """The FROC point at one score threshold (the operating point)."""
    curve = [p for p in froc(slices, min_iou) if p["threshold"] >= threshold]
    return {**curve[-1], "threshold": threshold}


def precision_recall(json_file: str | os.PathLike, results: str | os.PathLike
                     ) -> tuple[list[float], list[float], float, float] | None:
    """COCOeval (segm): precision at mask IoU 0.5 over recall 0..1, AP50 and AP (IoU
    0.50:0.95), both 0-100; None when there is no detection."""
    dets = json.loads(Path(results).read_text()) if Path(results).is_file() else []
    if not dets:
        return None
    gt = _coco(json_file)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][0, :, :, 0, -1]  # recall x classes, all areas, max dets
    prec = np.where(prec < 0, np.nan, prec)
    valid = ~np.all(np.isnan(prec), axis=0)
    if not valid.any():
        return None
    curve = np.nanmean(prec[:, valid], axis=1)
    return (ev.params.recThrs.tolist(), np.nan_to_num(curve).tolist(),
            float(ev.stats[1]) * 100, float(ev.stats[0]) * 100)
