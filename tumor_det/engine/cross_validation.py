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

Pooled metrics, the threshold scan and the operating point (the summary files) are
:mod:`tumor_det.evaluation.pooled`; this module runs the folds.

Each fold runs through :func:`tumor_det.engine.distributed.launch` (CPU, CPU processes or
GPUs). With ``resume``, finished folds are skipped and the fold in progress continues from its last
checkpoint.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from pathlib import Path

from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.config.config import ConfigError
from tumor_det.data import register_all
from tumor_det.engine.distributed import launch
from tumor_det.engine.trainer import TumorTrainer
from tumor_det.evaluation.pooled import (  # noqa: F401  (re-exported: the run's file names)
    FOLD_METRICS,
    SUMMARY_JSON,
    SUMMARY_MD,
    THRESHOLDS,
    clean_json,
    summarize,
    write_summary,
)
from tumor_det.utils.atomic import write_json, write_text

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

logger = logging.getLogger(__name__)


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
        write_json(out / FOLD_METRICS, clean_json({
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
