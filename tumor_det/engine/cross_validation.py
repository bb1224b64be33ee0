"""K-fold cross-validation by patient, with pooled metrics and an operating point (nnU-Net's way).

For a dataset prepared with ``tools/prepare_dataset.py --folds K`` (registered as
``<NAME>_fold0`` ... ``<NAME>_fold{K-1}``), :func:`cross_validate` trains one model per fold k
on the other folds (``DATASETS.TRAIN``; Detectron2 concatenates them), evaluates it on fold k
(``DATASETS.TEST``) and writes, in ``OUTPUT_DIR``::

    fold<k>/                      the fold's training run (checkpoints, model_best.pth by
                                  TUMOR.BEST_METRIC, metrics.json, config.yaml) and
      inference/<NAME>_fold<k>/   its held-out predictions (coco_instances_results.json) and
                                  per-slice metrics (tumor_metrics_per_image.csv);
                                  inference_TTA/ too when TEST.AUG.ENABLED
      inference_operating_point/  per-slice metrics at the operating point
      cv_fold_metrics.json        the fold's metrics, written last: the fold is finished
    cv_summary.json, cv_summary.md  per-fold, mean ± std and pooled metrics, operating point
    config.yaml                   the config with TUMOR.EVAL.SCORE_THRESHOLD at the operating
                                  point, DATASETS.TRAIN = all folds, OUTPUT_DIR = <OUTPUT_DIR>/all

Pooled metrics aggregate the per-slice records of all held-out slices (mask AP: COCOeval over all
held-out predictions). The operating point is the score threshold in :data:`THRESHOLDS` with the
best Dice over all held-out slices (``dice_all``: tumor-free slices count, 1 when nothing is
predicted there), recomputed from the saved predictions.

Each fold runs through :func:`tumor_det.engine.distributed.launch` (CPU, CPU processes or GPUs). With
``resume``, finished folds are skipped and the fold in progress continues from its last
checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path

from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.config.config import ConfigError
from tumor_det.data import register_all
from tumor_det.engine.distributed import launch
from tumor_det.engine.trainer import TumorTrainer
from tumor_det.evaluation.evaluator import TumorEvaluator, aggregate, annotation_mask
from tumor_det.utils.atomic import write_json, write_text

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

logger = logging.getLogger(__name__)

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


class CrossValidationError(ConfigError):
    """The dataset has no usable folds (one-line message)."""


def fold_datasets(dataset: str, folds: int | None = None) -> list[str]:
    """The registered fold datasets ``<dataset>_fold0..`` (all of them when ``folds`` is None).

    Raises :class:`CrossValidationError` when there are fewer than 2, or not ``folds``.
    """
    known = set(DatasetCatalog.list())
    found = []
    while f"{dataset}_fold{len(found)}" in known:
        found.append(f"{dataset}_fold{len(found)}")
    if len(found) < 2 or (folds is not None and len(found) != folds):
        raise CrossValidationError(
            f"dataset {dataset!r} has {len(found)} registered fold(s) ({dataset}_fold0...), "
            f"{folds or 'at least 2'} needed: prepare it with tools/prepare_dataset.py "
            f"--output <datasets>/{dataset} --folds {folds or 5}")
    return found


def fold_config(cfg: CfgNode, folds: list[str], k: int, root: str | os.PathLike) -> CfgNode:
    """The config of fold ``k``: train on the other folds, test on fold ``k``, in
    ``root/fold<k>``; COCO evaluation on (it saves the held-out predictions)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TRAIN = tuple(name for j, name in enumerate(folds) if j != k)
    cfg.DATASETS.TEST = (folds[k],)
    cfg.OUTPUT_DIR = str(Path(root) / f"fold{k}")
    cfg.TUMOR.EVAL.COCO = True
    cfg.freeze()
    return cfg


def _setup_loggers(root: str | os.PathLike) -> None:
    """One log for the whole run (``root/log.txt``; Detectron2's ``setup_logger`` caches its
    calls, so repeating this in a process adds no handler)."""
    for name in ("detectron2", "fvcore", "tumor_det"):
        setup_logger(str(root), distributed_rank=comm.get_rank(), name=name)


def _setup_process(cfg: CfgNode, root: str) -> None:
    """What ``default_setup`` does in each process of a fold, logging to ``root/log.txt``."""
    _setup_loggers(root)
    rank = comm.get_rank()
    register_all(cfg.TUMOR.DATASETS_ROOT or None)
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        write_text(Path(cfg.OUTPUT_DIR) / "config.yaml", cfg.dump())
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)


def run_fold(cfg: CfgNode, root: str, resume: bool, checkpoint: str) -> None:
    """Train and evaluate one fold (in every process of the fold's launch).

    ``checkpoint``: ``final`` or ``best`` (``model_best.pth``, when the run kept one), the
    model evaluated on the held-out fold. Rank 0 writes ``cv_fold_metrics.json`` last.
    """
    _setup_process(cfg, root)
    trainer = TumorTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    del trainer
    gc.collect()  # the trainer's data loader workers and model

    out = Path(cfg.OUTPUT_DIR)
    weights = out / "model_final.pth"
    if checkpoint == "best":
        if (out / "model_best.pth").is_file():
            weights = out / "model_best.pth"
        else:
            logger.warning("%s has no model_best.pth (TEST.EVAL_PERIOD 0 or TUMOR.BEST_METRIC "
                           "empty): evaluating model_final.pth", out)
    model = TumorTrainer.build_model(cfg)
    TumorCheckpointer(model, save_dir=str(out)).load(str(weights))
    results = {"": TumorTrainer.test(cfg, model)}
    if cfg.TEST.AUG.ENABLED:
        tta = TumorTrainer.test_with_TTA(cfg, model)
        results["_TTA"] = {k[:-len("_TTA")]: v for k, v in tta.items()}
    if comm.is_main_process():
        write_json(out / FOLD_METRICS, _clean({
            "fold": out.name, "dataset": cfg.DATASETS.TEST[0],
            "train_datasets": list(cfg.DATASETS.TRAIN), "weights": str(weights),
            "metrics": {suffix or "plain": _fold_metrics(res) for suffix, res in results.items()},
        }))
    comm.synchronize()


def _fold_metrics(results: dict) -> dict:
    """The tumor metrics of one evaluation plus mask AP/AP50 (COCO's, 0-100)."""
    metrics = dict(results.get("tumor", {}))
    segm = results.get("segm", {})
    metrics["mask_AP"] = segm.get("AP", math.nan)
    metrics["mask_AP50"] = segm.get("AP50", math.nan)
    return metrics


def _clean(value):
    """``value`` with NaN/inf as None (strict JSON) and numpy/torch numbers as floats."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def cross_validate(cfg: CfgNode, dataset: str, folds: int | None = None, num_gpus: int = 1,
                   resume: bool = False, checkpoint: str = "final", backend: str = "auto",
                   dist_url: str | None = None) -> dict:
    """Run the cross-validation of ``dataset`` with ``cfg`` into ``cfg.OUTPUT_DIR`` (see module
    docstring) and return the summary. Datasets must be registered (``register_all``)."""
    if checkpoint not in ("final", "best"):
        raise ValueError(f"checkpoint must be 'final' or 'best', not {checkpoint!r}")
    names = fold_datasets(dataset, folds)
    root = Path(cfg.OUTPUT_DIR)
    root.mkdir(parents=True, exist_ok=True)
    _setup_loggers(root)
    if not resume:  # a new run: nothing of an earlier one may pass for this one's
        for k in range(len(names)):
            for stale in (FOLD_METRICS, "model_best.pth"):
                (root / f"fold{k}" / stale).unlink(missing_ok=True)
        for stale in (SUMMARY_JSON, SUMMARY_MD):
            (root / stale).unlink(missing_ok=True)
    for k, name in enumerate(names):
        fold_cfg = fold_config(cfg, names, k, root)
        marker = Path(fold_cfg.OUTPUT_DIR) / FOLD_METRICS
        if resume and marker.is_file():
            logger.info("fold %d/%d (%s) finished: skipped", k + 1, len(names), name)
            continue
        logger.info("fold %d/%d: train on %s, evaluate on %s", k + 1, len(names),
                    ", ".join(fold_cfg.DATASETS.TRAIN), name)
        launch(run_fold, num_gpus, dist_url=dist_url, backend=backend,
               args=(fold_cfg, str(root), resume, checkpoint))
        if not marker.is_file():
            raise RuntimeError(f"fold {k} ended without {marker}")
    summary = summarize(cfg, names, root)
    write_summary(cfg, summary, root)
    return summary


# --- pooled metrics ------------------------------------------------------------------------


def read_records(csv_path: str | os.PathLike) -> list[dict]:
    """The per-slice records of a ``tumor_metrics_per_image.csv`` (numbers as numbers)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            if key in ("file_name", "image_id", "patient_id", "hd95_unit"):
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
            total = int(pred.sum()) + int(gt.sum())
            column.append(2.0 * int((pred & gt).sum()) / total if total else 1.0)
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
    return _clean(summary)


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
