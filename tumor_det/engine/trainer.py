"""Training: a Detectron2 ``DefaultTrainer`` for tumors (``tools/train_net.py``'s command line and
set-up: :mod:`tumor_det.cli.train_net`)."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

import tumor_det  # noqa: F401
from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.checkpoint.weights import resolve_weights
from tumor_det.config.config import ConfigError
from tumor_det.data import datasets_root, register_all
from tumor_det.data.augmentation import TumorDatasetMapper, build_train_augmentation
from tumor_det.data.sampling import has_outlines, weighted_train_dataset
from tumor_det.engine.distributed import patch_create_ddp_model
from tumor_det.evaluation.evaluator import TumorEvaluator
from tumor_det.modeling.meta_arch import with_tta

import torch
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.utils import comm

logger = logging.getLogger(__name__)


class DatasetNotRegisteredError(ConfigError):
    """``DATASETS.TRAIN``/``TEST`` names a dataset that is not registered."""


def check_datasets(cfg) -> None:
    """Raise :class:`DatasetNotRegisteredError` when ``DATASETS.TRAIN``/``TEST`` names a
    dataset that is not registered."""
    known = DatasetCatalog.list()
    missing = [n for n in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if n not in known]
    if missing:
        root = cfg.TUMOR.DATASETS_ROOT or None
        raise DatasetNotRegisteredError(
            f"dataset {missing[0]!r} (in DATASETS.TRAIN/TEST) is not registered. Prepare it with "
            f"tools/prepare_dataset.py --output {datasets_root(root)}/<name> so that "
            f"<name>_<split> exists; prepared now: {', '.join(register_all(root))}")


def with_resolved_weights(cfg):
    """``cfg``, or a copy with ``MODEL.WEIGHTS`` resolved (alias or URL to a local file).

    Raises :class:`~tumor_det.checkpoint.weights.WeightsNotFoundError` before any model is built.
    """
    weights = resolve_weights(cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR)
    if weights == cfg.MODEL.WEIGHTS:
        return cfg
    resolved = cfg.clone()
    resolved.defrost()
    resolved.MODEL.WEIGHTS = weights
    if cfg.is_frozen():
        resolved.freeze()
    return resolved


class ValidationLoss(hooks.HookBase):
    """Every ``period`` iterations, log the training losses computed on ``DATASETS.TEST[0]``."""

    def __init__(self, cfg, period: int) -> None:
        self._period = period
        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TRAIN = cfg.DATASETS.TEST[:1]
        self._loader = iter(build_detection_train_loader(
            cfg, mapper=DatasetMapper(cfg, is_train=True, augmentations=[
                T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)])))

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if next_iter % self._period and next_iter != self.trainer.max_iter:
            return
        with torch.no_grad():
            losses = self.trainer.model(next(self._loader))
        reduced = {f"val_{k}": v.item() for k, v in comm.reduce_dict(losses).items()}
        if comm.is_main_process():
            self.trainer.storage.put_scalars(val_total_loss=sum(reduced.values()), **reduced)


class TumorTrainer(DefaultTrainer):
    """DefaultTrainer with tumor evaluation, MRI augmentation, atomic checkpoints and
    ``model_best.pth`` kept by ``TUMOR.BEST_METRIC``."""

    def __init__(self, cfg) -> None:
        # the user errors first, before the model is built
        check_datasets(cfg)
        cfg = with_resolved_weights(cfg)
        patch_create_ddp_model()
        super().__init__(cfg)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a DetectionCheckpointer just before calling this.
        self.checkpointer = TumorCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, **self.checkpointer.checkpointables)
        hook_list = super().build_hooks()
        cfg = self.cfg
        if cfg.TUMOR.VAL_LOSS_PERIOD > 0 and cfg.DATASETS.TEST:
            hook_list.insert(-1, ValidationLoss(cfg, cfg.TUMOR.VAL_LOSS_PERIOD))
        if cfg.TUMOR.BEST_METRIC and cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
            # after EvalHook, which produced the metric; before the writers
            hook_list.insert(-1, hooks.BestCheckpointer(
                cfg.TEST.EVAL_PERIOD, self.checkpointer, cfg.TUMOR.BEST_METRIC,
                cfg.TUMOR.BEST_MODE))
        return hook_list

    @classmethod
    def build_train_loader(cls, cfg):
        filter_empty = cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        sampler = None
        if cfg.TUMOR.DATASET_WEIGHTS:
            # each training dataset drawn by its weight (tumor_det.data.sampling)
            dataset, sampler = weighted_train_dataset(cfg.DATASETS.TRAIN,
                                                      cfg.TUMOR.DATASET_WEIGHTS, filter_empty)
        else:
            dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=filter_empty)
        mapper = TumorDatasetMapper(cfg, build_train_augmentation(cfg), sources=dataset)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluators = [TumorEvaluator.from_config(cfg, dataset_name, output_folder)]
        if cfg.TUMOR.EVAL.COCO:
            # box-only ground truth (YOLO labels) is scored on boxes: no segm AP
            tasks = ("bbox", "segm") if has_outlines(dataset_name) else ("bbox",)
            evaluators.insert(0, COCOEvaluator(dataset_name, tasks=tasks,
                                               distributed=True, output_dir=output_folder,
                                               use_fast_impl=False))
        return DatasetEvaluators(evaluators)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate ``model`` with test-time augmentation (``TEST.AUG``, :func:`with_tta`) on
        ``DATASETS.TEST`` into ``OUTPUT_DIR/inference_TTA/<name>``; keys end in ``_TTA``
        (Detectron2's ``tools/train_net.py``)."""
        logger.info("Running inference with test-time augmentation ...")
        evaluators = [cls.build_evaluator(cfg, name, output_folder=os.path.join(
            cfg.OUTPUT_DIR, "inference_TTA", name)) for name in cfg.DATASETS.TEST]
        res = cls.test(cfg, with_tta(cfg, model), evaluators)
        return OrderedDict({k + "_TTA": v for k, v in res.items()})


def evaluate(cfg, resume: bool = False) -> dict:
    """``--eval-only``: load ``MODEL.WEIGHTS`` (or, with ``resume``, the last checkpoint in
    ``OUTPUT_DIR``) and evaluate on ``DATASETS.TEST``, also with TTA when
    ``TEST.AUG.ENABLED``."""
    model = TumorTrainer.build_model(cfg)
    TumorCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS,
                                                                     resume=resume)
    res = TumorTrainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        res.update(TumorTrainer.test_with_TTA(cfg, model))
    return res


def train(cfg, resume: bool = False):
    """Train (``resume``: from the last checkpoint in ``OUTPUT_DIR``); with
    ``TEST.AUG.ENABLED`` the final model is also evaluated with TTA, as in Detectron2's
    ``tools/train_net.py``."""
    trainer = TumorTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    if cfg.TEST.AUG.ENABLED:
        trainer.register_hooks(
            [hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))])
    return trainer.train()
