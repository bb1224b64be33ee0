"""Training from a LazyConfig: Detectron2's ``tools/lazyconfig_train_net.py`` for tumors.

``instantiate`` the model, optimizer and data loaders of a LazyConfig
(:mod:`tumor_det.config.lazy`), then Detectron2's ``AMPTrainer`` (``train.amp.enabled`` on
CUDA) or ``SimpleTrainer`` with the hooks of the YAML path (:mod:`tumor_det.engine.trainer`):
atomic checkpoints and ``last_checkpoint`` (``TumorCheckpointer``),
periodic evaluation, ``model_best.pth`` by ``tumor.best_metric``, ``metrics.json`` and
TensorBoard. The builders that the configs call (:func:`build_train_loader`,
:func:`build_evaluator`, :func:`warmup_multistep`) go through the YAML path's own
``TumorTrainer.build_train_loader`` / ``build_evaluator`` and Detectron2's LR schedule, so both
front ends share one mapper, augmentation, sampler and evaluator.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.checkpoint.weights import resolve_weights
from tumor_det.config.lazy import _plain, evaluator_cfg, to_cfgnode, train_loader_cfg
from tumor_det.data import register_all
from tumor_det.engine.distributed import patch_create_ddp_model
from tumor_det.engine.trainer import TumorTrainer, ValidationLoss, check_datasets

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset, print_csv_format
from detectron2.solver import WarmupParamScheduler
from detectron2.utils import comm
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import DictConfig

__all__ = ["build_evaluator", "build_train_loader", "check_lazy_config", "do_test", "do_train",
           "warmup_multistep"]

logger = logging.getLogger(__name__)


# --- builders called by configs/lazy/*.py -----------------------------------------------------


def build_train_loader(**kwargs: Any):
    """The training loader of the YAML path (``TumorTrainer.build_train_loader``: weighted
    sampling, :class:`~tumor_det.data.augmentation.TumorDatasetMapper`,
    ``build_train_augmentation``) for the arguments of
    :func:`~tumor_det.config.lazy.train_loader_cfg`."""
    return TumorTrainer.build_train_loader(train_loader_cfg(**kwargs))


def build_evaluator(dataset_name: str, output_dir: str = "", **kwargs: Any) -> DatasetEvaluators:
    """``TumorEvaluator`` (+ ``COCOEvaluator`` when ``coco``) of the YAML path for one dataset,
    writing into ``output_dir/inference/<dataset_name>`` (the tumor metrics' per-slice CSV)."""
    folder = os.path.join(output_dir, "inference", dataset_name) if output_dir else None
    return TumorTrainer.build_evaluator(evaluator_cfg(**kwargs), dataset_name, folder)


def warmup_multistep(max_iter: int, steps: Sequence[int], warmup_iters: int = 1000,
                     warmup_factor: float = 0.001, gamma: float = 0.1) -> WarmupParamScheduler:
    """``SOLVER.STEPS``/``WARMUP_ITERS`` as a LazyConfig ``lr_multiplier``: the schedule that
    Detectron2's ``build_lr_scheduler`` makes of them (linear warm-up, then ``gamma`` at each
    step), in iterations, so that ``train.max_iter=N`` keeps the warm-up length."""
    steps = [s for s in _plain(steps) if s <= max_iter]
    return WarmupParamScheduler(
        MultiStepParamScheduler(values=[gamma ** k for k in range(len(steps) + 1)],
                                milestones=steps, num_updates=max_iter),
        warmup_factor, min(warmup_iters / max_iter, 1.0))


# --- checks, test, train ----------------------------------------------------------------------


def check_lazy_config(cfg: DictConfig, weights: str | None = None) -> CfgNode:
    """Register the datasets, check them, resolve ``train.init_checkpoint`` (``weights``, the
    ``--weights`` shortcut, replaces it; ``last`` is this run's last checkpoint) in place; return
    the equivalent YACS config. Raises the user errors of ``tumor_det.cli.common.USER_ERRORS``
    and :class:`~tumor_det.engine.trainer.DatasetNotRegisteredError` before any model is built."""
    if weights:
        cfg.train.init_checkpoint = weights
    cfg.train.init_checkpoint = resolve_weights(cfg.train.init_checkpoint or "",
                                                cfg.train.output_dir)
    ycfg = to_cfgnode(cfg)
    register_all(ycfg.TUMOR.DATASETS_ROOT or None)
    check_datasets(ycfg)
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("train.device is %r but CUDA is not available: using the CPU",
                       cfg.train.device)
        cfg.train.device = "cpu"
        ycfg.MODEL.DEVICE = "cpu"
    return ycfg


def _test_names(cfg: DictConfig) -> list[str]:
    names = _plain(cfg.dataloader.test.dataset.names)
    return [names] if isinstance(names, str) else list(names)


def do_test(cfg: DictConfig, model: torch.nn.Module) -> dict:
    """Evaluate ``model`` on each dataset of ``dataloader.test.dataset.names`` with
    ``dataloader.evaluator``; the results as the YAML path's ``TumorTrainer.test`` returns them
    (one dataset: its results; several: by dataset name)."""
    results = OrderedDict()
    for name in _test_names(cfg):
        cfg.dataloader.test.dataset.names = name
        cfg.dataloader.evaluator.dataset_name = name
        results[name] = inference_on_dataset(model, instantiate(cfg.dataloader.test),
                                             instantiate(cfg.dataloader.evaluator))
        if comm.is_main_process():
            logger.info("Evaluation results for %s in csv format:", name)
            print_csv_format(results[name])
    return results[next(iter(results))] if len(results) == 1 else results


def _restore_test_names(cfg: DictConfig, names: list[str]) -> None:
    cfg.dataloader.test.dataset.names = names[0] if len(names) == 1 else names
    cfg.dataloader.evaluator.dataset_name = "${..test.dataset.names}"


def test_all(cfg: DictConfig, ycfg: CfgNode, model: torch.nn.Module) -> dict:
    """:func:`do_test`, then with ``tumor.test_aug.enabled`` the same with test-time
    augmentation (keys ending in ``_TTA``, as the YAML path)."""
    names = _test_names(cfg)
    try:
        results = do_test(cfg, model)
    finally:
        _restore_test_names(cfg, names)
    if ycfg.TEST.AUG.ENABLED:
        results.update(TumorTrainer.test_with_TTA(ycfg, model))
    return results


def do_train(cfg: DictConfig, ycfg: CfgNode, resume: bool = False) -> None:
    """Detectron2's ``lazyconfig_train_net.do_train`` with tumor-det's checkpointer and hooks."""
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    patch_create_ddp_model()
    model = d2_defaults.create_ddp_model(model, **_plain(cfg.train.ddp))
    amp = cfg.train.amp.enabled and str(cfg.train.device).startswith("cuda")
    trainer = (AMPTrainer if amp else SimpleTrainer)(model, train_loader, optim)
    checkpointer = TumorCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    period = cfg.train.eval_period
    tumor = ycfg.TUMOR
    evaluate = period > 0 and bool(_test_names(cfg))
    hook_list = [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **_plain(cfg.train.checkpointer))
        if comm.is_main_process() else None,
        ValidationLoss(ycfg, tumor.VAL_LOSS_PERIOD)
        if tumor.VAL_LOSS_PERIOD > 0 and ycfg.DATASETS.TEST else None,
        hooks.EvalHook(period, lambda: test_all(cfg, ycfg, model)) if evaluate else None,
        hooks.BestCheckpointer(period, checkpointer, tumor.BEST_METRIC, tumor.BEST_MODE)
        if evaluate and tumor.BEST_METRIC and comm.is_main_process() else None,
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period) if comm.is_main_process() else None,
    ]
    trainer.register_hooks(hook_list)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def do_eval_only(cfg: DictConfig, ycfg: CfgNode, resume: bool = False) -> dict:
    """``--eval-only``: load ``train.init_checkpoint`` (``resume``: the last checkpoint of
    ``train.output_dir``) and evaluate."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    patch_create_ddp_model()
    model = d2_defaults.create_ddp_model(model)
    TumorCheckpointer(model, cfg.train.output_dir).resume_or_load(cfg.train.init_checkpoint,
                                                                  resume=resume)
    return test_all(cfg, ycfg, model)
