"""Pooled cross-validation metrics: over all held-out slices, the threshold scan and the
operating point, and the summary files (``cv_summary.json``, ``cv_summary.md``, ``config.yaml``).

Reads what :func:`tumor_det.engine.cross_validation.cross_validate` wrote per fold (the layout
below) and never trains. Pooled metrics aggregate the per-slice records of all held-out slices
(mask AP: COCOeval over all held-out predictions). The operating point is the score threshold in
:data:`THRESHOLDS` with the best Dice over all held-out slices (``dice_all``: tumor-free slices
count, 1 when nothing is predicted there), recomputed from the saved predictions with the one
Dice (:mod:`tumor_det.evaluation.metrics`).

Layout of a run's ``OUTPUT_DIR``: ``fold<k>/<variant>/<NAME>_fold<k>/``
(``coco_instances_results.json``, ``tumor_metrics_per_image.csv``) for each variant in
:data:`VARIANTS`, and ``fold<k>/`` :data:`FOLD_METRICS` (the fold is finished).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections import defaultdict
from pathlib import Path

from tumor_det.evaluation.evaluator import TumorEvaluator, aggregate, annotation_mask
from tumor_det.evaluation.metrics import confusion, dice
from tumor_det.utils.atomic import write_json, write_text

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

#: Score thresholds scanned for the operating point.
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 ... 0.95
FOLD_METRICS = "cv_fold_metrics.json"
SUMMARY_JSON = "cv_summary.json"
SUMMARY_MD = "cv_summary.md"
#: Inference folders of a fold (TumorTrainer.test / test_with_TTA) and their result-key suffix.
VARIANTS = {"inference": "", "inference_TTA": "_TTA"}
#: Metrics of the summary table: (key in the pooled/per-fold metrics, column title).
COLUMNS = (("images", "slices"), ("dice", "Dice"), ("dice_all", "Dice all slices"),
           ("sensitivity", "lesion sens."),
           ("fp_per_image", "FP/slice"), ("image_specificity", "specificity"),
           ("hd95", "HD95"), ("mask_AP", "mask AP"))


def clean_json(value):
    """``value`` with NaN/inf as None (strict JSON) and numpy/torch numbers as floats."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def read_records(csv_path: str | os.PathLike) -> list[dict]:
    """The per-slice records of a ``tumor_metrics_per_image.csv`` (numbers as numbers)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            if key in ("file_name", "image_id", "patient_id", "hd95_unit", "scored_on"):
                continue
            row[key] = float(value) if value else math.nan
    return rows


def load_predictions(path: str | os.PathLike) -> dict[int, list[dict]]:
    """COCOEvaluator's ``coco_instances_results.json`` by image id."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    with open(path) as f:
        for pred in json.load(f):
            by_image[pred["image_id"]].append(pred)
    return by_image


def _prediction_path(root: Path, k: int, name: str, variant: str) -> Path:
    return root / f"fold{k}" / variant / name / "coco_instances_results.json"


def pooled_mask_ap(names: list[str], prediction_files: list[Path]) -> dict[str, float]:
    """Mask AP and AP50 (0-100) of all held-out predictions against all folds' ground truth.

    Image ids are renumbered per fold (folds may reuse them); COCOeval as in COCOEvaluator.
    """
    images, anns, dets = [], [], []
    categories: dict[int, dict] = {}
    for name, pred_file in zip(names, prediction_files, strict=True):
        gt = _coco_gt(name)
        new_id = {}
        for img in gt.dataset["images"]:
            new_id[img["id"]] = len(images) + 1
            images.append({**img, "id": new_id[img["id"]]})
        for ann in gt.dataset["annotations"]:
            anns.append({**ann, "id": len(anns) + 1, "image_id": new_id[ann["image_id"]]})
        categories.update({c["id"]: c for c in gt.dataset["categories"]})
        with open(pred_file) as f:
            dets += [{**d, "image_id": new_id[d["image_id"]]} for d in json.load(f)]
    if not dets:
        return {"mask_AP": math.nan, "mask_AP50": math.nan}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns,
                           "categories": list(categories.values())}
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dets), "segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    ap, ap50 = coco_eval.stats[:2]
    return {"mask_AP": float(ap * 100), "mask_AP50": float(ap50 * 100)}


def _coco_gt(name: str) -> COCO:
    """The COCO ground truth COCOEvaluator used for ``name`` (its registered JSON)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(MetadataCatalog.get(name).json_file)


def _held_out(names: list[str], prediction_files: list[Path]):
    """Per held-out slice: (dataset record, ground-truth union mask, [(score, mask)])."""
    for name, pred_file in zip(names, prediction_files, strict=True):
        preds = load_predictions(pred_file)
        for record in DatasetCatalog.get(name):
            h, w = record["height"], record["width"]
            gt = np.zeros((h, w), bool)
            for ann in record.get("annotations", []):
                if not ann.get("iscrowd", 0):
                    gt |= annotation_mask(ann, h, w)
            masks = [(p["score"], mask_util.decode(p["segmentation"]).astype(bool))
                     for p in preds.get(record["image_id"], [])]
            yield name, record, gt, masks


def threshold_scan(names: list[str], prediction_files: list[Path],
                   thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict]:
    """Dice over the held-out slices at each score threshold, from the saved predictions.

    Per slice, Dice of the union of the masks scoring at least the threshold against the
    ground-truth union (1 when both are empty, as the TumorEvaluator's MONAI Dice); ``dice`` is
    the mean over slices with tumor, ``dice_all`` over all slices.
    """
    columns, has_tumor = [], []  # per slice: Dice at each threshold
    for _, _, gt, masks in _held_out(names, prediction_files):
        column = []
        for t in thresholds:
            pred = np.zeros_like(gt)
            for score, mask in masks:
                if score >= t:
                    pred |= mask
            column.append(dice(confusion(pred, gt)))
        columns.append(column)
        has_tumor.append(bool(gt.any()))
    per_slice = np.array(columns, float).reshape(-1, len(thresholds)).T
    tumor = np.array(has_tumor, bool)
    return [{"threshold": t,
             "dice": float(row[tumor].mean()) if tumor.any() else math.nan,
             "dice_all": float(row.mean()) if row.size else math.nan}
            for t, row in zip(thresholds, per_slice, strict=True)]


def operating_point(scan: list[dict], key: str = "dice_all") -> dict:
    """The scanned threshold with the best ``key``; of several equal best, the middle one."""
    values = [s[key] for s in scan]
    if all(math.isnan(v) for v in values):
        raise ValueError("no held-out slice to choose an operating point on")
    best = max(v for v in values if not math.isnan(v))
    tied = [s for s in scan if s[key] >= best - 1e-9]
    return tied[(len(tied) - 1) // 2]


def evaluate_at(cfg: CfgNode, names: list[str], prediction_files: list[Path], threshold: float,
                output_dirs: list[Path] | None = None) -> tuple[list[dict], list[dict]]:
    """The TumorEvaluator on the saved held-out predictions at ``threshold``: per-fold metrics
    and all per-slice records (its CSVs written to ``output_dirs``)."""
    e = cfg.TUMOR.EVAL
    fold_metrics, records = [], []
    output_dirs = output_dirs or [None] * len(names)
    for name, pred_file, out in zip(names, prediction_files, output_dirs, strict=True):
        evaluator = TumorEvaluator(name, threshold, e.LESION_IOU, e.PIXEL_SPACING_MM,
                                   str(out) if out else None)
        evaluator.reset()
        for _, record, _, masks in _held_out([name], [pred_file]):
            h, w = record["height"], record["width"]
            inst = Instances((h, w))
            inst.scores = torch.tensor([s for s, _ in masks], dtype=torch.float32)
            inst.pred_masks = torch.from_numpy(
                np.stack([m for _, m in masks]) if masks else np.zeros((0, h, w), bool))
            evaluator.process([{"image_id": record["image_id"]}], [{"instances": inst}])
        fold_metrics.append(dict(evaluator.evaluate().get("tumor", {})))
        if out:
            records += read_records(Path(out) / "tumor_metrics_per_image.csv")
    return fold_metrics, records


def summarize(cfg: CfgNode, names: list[str], root: str | os.PathLike) -> dict:
    """Per-fold, mean ± std and pooled metrics of a finished run, and its operating point."""
    root = Path(root)
    folds = [json.loads((root / f"fold{k}" / FOLD_METRICS).read_text())
             for k in range(len(names))]
    summary: dict = {"dataset": names[0].rsplit("_fold", 1)[0], "folds": len(names),
                     "score_threshold": cfg.TUMOR.EVAL.SCORE_THRESHOLD,
                     "weights": [f["weights"] for f in folds], "variants": {}}
    for variant, suffix in VARIANTS.items():
        key = suffix or "plain"
        if not all(key in f["metrics"] for f in folds):
            continue
        per_fold = [{k: _nan(v) for k, v in f["metrics"][key].items()} for f in folds]
        records = []
        for k, name in enumerate(names):
            records += read_records(root / f"fold{k}" / variant / name /
                                    "tumor_metrics_per_image.csv")
        preds = [_prediction_path(root, k, name, variant) for k, name in enumerate(names)]
        mask_ap = pooled_mask_ap(names, preds)  # all predictions: no threshold
        pooled = {**aggregate(records), **mask_ap}
        scan = threshold_scan(names, preds)
        op = operating_point(scan)
        op_dirs = [root / f"fold{k}" / f"{variant}_operating_point" / name
                   for k, name in enumerate(names)]
        _, op_records = evaluate_at(cfg, names, preds, op["threshold"], op_dirs)
        summary["variants"][variant] = {
            "per_fold": per_fold,
            "mean": {k: _mean(per_fold, k) for k in per_fold[0]},
            "std": {k: _std(per_fold, k) for k in per_fold[0]},
            "pooled": pooled,
            "threshold_scan": scan,
            "operating_point": {"score_threshold": op["threshold"], "dice": op["dice"],
                                "dice_all": op["dice_all"],
                                "pooled": {**aggregate(op_records), **mask_ap}},
        }
    # the predictions inference will make: with TTA when it is on
    chosen = "inference_TTA" if "inference_TTA" in summary["variants"] else "inference"
    summary["operating_point"] = {
        "score_threshold": summary["variants"][chosen]["operating_point"]["score_threshold"],
        "from": chosen, "criterion": "dice_all (pooled over the held-out slices)"}
    return clean_json(summary)


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if not math.isnan(r.get(key, math.nan))]
    return float(np.mean(values)) if values else math.nan


def _std(rows: list[dict], key: str) -> float:
    """Sample standard deviation over the folds (ddof 1)."""
    values = [r[key] for r in rows if not math.isnan(r.get(key, math.nan))]
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def write_summary(cfg: CfgNode, summary: dict, root: str | os.PathLike) -> None:
    """``cv_summary.json``, ``cv_summary.md`` and the operating point's ``config.yaml``."""
    root = Path(root)
    write_json(root / SUMMARY_JSON, summary)
    write_text(root / SUMMARY_MD, summary_markdown(summary))
    final = cfg.clone()
    final.defrost()
    fold_names = [f"{summary['dataset']}_fold{k}" for k in range(summary["folds"])]
    final.DATASETS.TRAIN = tuple(fold_names)
    final.DATASETS.TEST = ()
    final.OUTPUT_DIR = str(root / "all")
    final.TUMOR.EVAL.SCORE_THRESHOLD = summary["operating_point"]["score_threshold"]
    write_text(root / "config.yaml", final.dump())


def _fmt(value, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "images":
        return str(int(value))
    return f"{value:.1f}" if key in ("hd95", "mask_AP") else f"{value:.3f}"


def summary_markdown(summary: dict) -> str:
    """The summary as Markdown tables (one per variant: per fold, mean ± std, pooled)."""
    lines = [f"# Cross-validation of {summary['dataset']} ({summary['folds']} folds)", ""]
    op = summary["operating_point"]
    lines += [f"Operating point: score threshold **{op['score_threshold']:.2f}** (best pooled "
              f"Dice over all held-out slices, from {op['from']}); the tables use "
              f"TUMOR.EVAL.SCORE_THRESHOLD {summary['score_threshold']:.2f}, the last row the "
              "operating point. Dice: mean over slices with tumor; Dice all slices: a "
              "tumor-free slice scores 1 when nothing is predicted on it, else 0. Std over "
              "folds (ddof 1). HD95 in mm where the pixel spacing is known.", ""]
    header = "| | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    for variant, v in summary["variants"].items():
        lines += [f"## {variant}", "", header, rule]
        for k, row in enumerate(v["per_fold"]):
            lines.append(f"| fold {k} | " + " | ".join(_fmt(row.get(key), key)
                                                       for key, _ in COLUMNS) + " |")
        lines.append("| mean ± std | " + " | ".join(
            "-" if key == "images" else f"{_fmt(v['mean'].get(key), key)} ± "
            f"{_fmt(v['std'].get(key), key)}" for key, _ in COLUMNS) + " |")
        lines.append("| pooled | " + " | ".join(_fmt(v["pooled"].get(key), key)
                                               for key, _ in COLUMNS) + " |")
        at = v["operating_point"]
        lines.append(f"| pooled at {at['score_threshold']:.2f} | " + " | ".join(
            _fmt(at["pooled"].get(key), key) for key, _ in COLUMNS) + " |")
        lines += ["", "Pooled Dice by score threshold: " + ", ".join(
            f"{s['threshold']:.2f}: {_fmt(s['dice_all'], 'dice')}"
            for s in v["threshold_scan"]), ""]
    return "\n".join(lines)
