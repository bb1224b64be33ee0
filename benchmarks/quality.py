"""Accuracy benchmarks: input-size trade-off (``sizes``) and both models trained alike
(``accuracy``): COCO mask AP, Dice and lesion sensitivity on the same held-out images."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable, Iterator
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.checkpoint.weights import resolve_weights
from tumor_det.config.config import get_tumor_cfg, resolve_device
from tumor_det.data import register_all, register_coco_split
from tumor_det.data.prepare import PrepareOptions, prepare
from tumor_det.engine.trainer import TumorTrainer
from tumor_det.evaluation.evaluator import TumorEvaluator, annotation_mask
from tumor_det.evaluation.threshold import with_score_threshold
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor

import cv2
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.solver import build_lr_scheduler
from detectron2.structures import Instances

from benchmarks.common import LoadMonitor, Report, interleaved, log, median
from benchmarks.models import (
    MODELS,
    ModelSpec,
    Sample,
    TrainStep,
    build_pair,
    synthetic_samples,
    tv_predict,
    tv_to_instances,
)

CLIP_NORM = 5.0  # gradient-norm clipping in the accuracy task (both models)


# ----------------------------------------------------------------------------- evaluation


def evaluate(predict: Callable[[np.ndarray], Instances], dataset: str,
             timings: list[float] | None = None) -> dict[str, float]:
    """Run ``predict(bgr_image) -> Instances`` on a registered dataset: tumor metrics (score >=
    0.5, lesion IoU >= 0.1) and COCO mask AP / AP50 (Detectron2's COCOEvaluator, pycocotools'
    official COCOeval, all instances)."""
    records = DatasetCatalog.get(dataset)
    evaluator = DatasetEvaluators([
        COCOEvaluator(dataset, tasks=("segm",), distributed=False, use_fast_impl=False),
        TumorEvaluator(dataset, score_threshold=0.5, lesion_iou=0.1),
    ])
    evaluator.reset()
    for r in records:
        image = cv2.imread(r["file_name"], cv2.IMREAD_COLOR)
        t = time.perf_counter()
        inst = predict(image)
        if timings is not None:
            timings.append(time.perf_counter() - t)
        evaluator.process([{"image_id": r["image_id"]}], [{"instances": inst}])
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its summary
        results = evaluator.evaluate()
    metrics = dict(results["tumor"])
    for key in ("AP", "AP50"):
        # no predictions at all: Detectron2 reports NaN; that is an AP of 0 here
        ap = results["segm"][key]
        metrics[key] = 0.0 if math.isnan(ap) else ap
    return metrics


# ----------------------------------------------------------------------------- sizes


@contextlib.contextmanager
def _detectron2_logs_to_stderr() -> Iterator[None]:
    """Detectron2's INFO logs on stderr meanwhile: DefaultTrainer would otherwise set up its
    stdout logger, and stdout carries the benchmark's tables."""
    d2 = logging.getLogger("detectron2")
    if d2.handlers:  # already configured by the caller
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s]: %(message)s", "%H:%M:%S"))
    level, propagate = d2.level, d2.propagate
    d2.addHandler(handler)
    d2.setLevel(logging.INFO)
    d2.propagate = False
    try:
        yield
    finally:
        d2.removeHandler(handler)
        d2.setLevel(level)
        d2.propagate = propagate


def lr_steps(n: int, *fractions: float) -> str:
    """``SOLVER.STEPS`` at these fractions of ``n`` iterations, as Detectron2's scheduler takes
    them (strictly increasing, within 1..n-1: short runs drop or merge steps)."""
    return str(tuple(sorted({int(f * n) for f in fractions} & set(range(1, n)))))


def train_quick(args: Namespace, workdir: Path) -> tuple[str, float]:
    """Train ``args.config`` for ``args.iters`` iterations with TumorTrainer (as
    tools/train_net.py does, in this process); returns (checkpoint, seconds)."""
    n = args.iters
    cfg = get_tumor_cfg(args.config, [
        "OUTPUT_DIR", str(workdir / "sizes_train"), "SOLVER.MAX_ITER", str(n),
        "SOLVER.STEPS", lr_steps(n, 0.75, 0.9),
        "SOLVER.WARMUP_ITERS", str(min(50, n // 4)), "SOLVER.CHECKPOINT_PERIOD", str(10 * n),
        "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",  # no evaluation at the end either
        "MODEL.DEVICE", args.device])
    resolve_device(cfg)
    cfg.MODEL.WEIGHTS = resolve_weights(cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR)
    register_all(cfg.TUMOR.DATASETS_ROOT or None)
    cfg.freeze()
    log(f"training {args.config} for {n} iterations into {cfg.OUTPUT_DIR}")
    t = time.perf_counter()
    with _detectron2_logs_to_stderr():
        trainer = TumorTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    return str(Path(cfg.OUTPUT_DIR) / "model_final.pth"), time.perf_counter() - t


def run_sizes(args: Namespace) -> Report:
    """Latency of both R50-FPN models and Dice of a briefly trained model per test size."""
    rep = Report("sizes", "input size: speed / accuracy")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tumor-bench-"))
    if args.weights:
        weights, how = args.weights, f"`{args.weights}` (given with --weights)"
    else:
        weights, secs = train_quick(args, workdir)
        how = (f"trained here for {args.iters} iterations of `{Path(args.config).name}` "
               f"({secs / 60:.1f} min)")
    register_all()
    rows = []
    val0 = cv2.imread(DatasetCatalog.get("tumor_synth_val")[0]["file_name"], cv2.IMREAD_COLOR)
    with LoadMonitor() as load:
        for size in args.sizes:
            spec = ModelSpec(size=size, detections=args.detections, device=args.device,
                             tv_config=args.tv_config, seed=args.seed, opts=list(args.opts))
            _, ours, tv = build_pair(spec)
            # a synthetic slice drawn at the test size: both models see size x size pixels
            imgs = [synthetic_samples(1, size, seed=args.seed + 1)[0].image]
            times = interleaved({"ours": lambda o=ours, x=imgs: o.run_model(x),
                                 "torchvision": lambda m=tv, x=imgs: tv_predict(m, x, args.device)},
                                args.reps, args.warmup, args.device)
            del ours, tv
            cfg = get_tumor_cfg(args.config, [
                "MODEL.WEIGHTS", weights, "MODEL.DEVICE", args.device,
                "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(2 * size)])
            predictor = TumorPredictor(with_score_threshold(cfg, 0.0))
            predictor.run_model([val0])  # warm-up
            timings: list[float] = []
            m = evaluate(lambda im, p=predictor: p.run_model([im])[0], "tumor_synth_val",
                         timings)
            t_ours, t_tv = median(times["ours"]), median(times["torchvision"])
            rows.append([size, 1e3 * t_ours, 1e3 * t_tv, t_ours / t_tv,
                         1e3 * median(timings), m["dice"], m["dice_all"], m["sensitivity"],
                         m["fp_per_image"], m["AP"]])
            log(f"sizes {size}: R50 ours {1e3 * t_ours:.0f} ms, tv {1e3 * t_tv:.0f} ms, "
                f"trained model {1e3 * median(timings):.0f} ms, Dice {m['dice']:.3f}")
    n_val = len(DatasetCatalog.get("tumor_synth_val"))
    rep.add_text(
        f"Latency: both R50-FPN models (untrained, one initialisation, FrozenBN, "
        f"{args.detections} detections/image, score threshold 0) on a size x size synthetic "
        f"slice, batch 1, median of {args.reps} interleaved runs after {args.warmup} warm-up, "
        f"{args.threads} threads. Accuracy: the model {how}, evaluated at each test size "
        f"(`INPUT.MIN_SIZE_TEST`) on `tumor_synth_val` ({n_val} slices of 256 px, upsampled by "
        f"the test resize), its latency (median per image over those slices, "
        f"inference only) beside. Dice: mean over slices with tumor of the "
        f"union of instances with score >= 0.5; Dice (all) counts tumor-free slices; lesion "
        f"sensitivity at IoU >= 0.1; mask AP: COCOeval segm, all instances.")
    rep.add_table(rows, ["test size", "R50 ours ms", "R50 torchvision ms", "ratio",
                         "trained model ms", "Dice", "Dice (all)", "lesion sens.",
                         "FP/img", "mask AP"],
                  floatfmt=("g", ".0f", ".0f", ".3f", ".0f", ".3f", ".3f", ".3f", ".2f", ".1f"))
    rep.add_text(load.summary())
    rep.busy = load.busy
    return rep


# ----------------------------------------------------------------------------- accuracy


def load_sample(record: dict, size: int) -> Sample:
    """One record as an RGB image resized as at test time (Detectron2's ResizeShortestEdge to
    ``size``, at most ``2 * size``) with its non-empty instance masks."""
    image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)[:, :, ::-1]
    h, w = image.shape[:2]
    tfm = T.ResizeShortestEdge(size, 2 * size).get_transform(image)
    image = tfm.apply_image(np.ascontiguousarray(image))
    masks = [tfm.apply_segmentation(annotation_mask(a, h, w).astype(np.uint8)).astype(bool)
             for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    masks = [m for m in masks if m.any()]
    stack = np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), bool)
    return Sample(image, stack)


def prepare_real(args: Namespace, workdir: Path) -> bool:
    """Prepare the real VIA slices (tools/prepare_dataset.py's code, patient-level split
    0.6/0.2/0.2, seed 0); register ``bench_real_<split>``."""
    if not (Path(args.real) / "via_region_data.json").is_file():
        log(f"accuracy: {args.real} not found: synthetic data only")
        return False
    out = workdir / "brain_tumor"
    if not (out / "annotations" / "test.json").is_file():
        with contextlib.redirect_stdout(io.StringIO()):
            prepare(PrepareOptions(format="via", input=Path(args.real), output=out,
                                   split="0.6,0.2,0.2", seed=0))
    for split in ("train", "val", "test"):
        register_coco_split(f"bench_real_{split}", out / "annotations" / f"{split}.json",
                            out / "images")
    return True


def _train(step: TrainStep, plan: list, cache: list[Sample], cfg) -> tuple[float, list[float]]:
    """Run ``plan`` (per iteration: (sample index, flip) pairs) under Detectron2's
    WarmupMultiStepLR schedule from ``cfg.SOLVER``; returns (seconds, losses)."""
    scheduler = build_lr_scheduler(cfg, step.optimizer)
    step.model.train()
    losses = []
    t = time.perf_counter()
    for it, batch_plan in enumerate(plan):
        batch = [Sample(cache[i].image[:, ::-1].copy(), cache[i].masks[:, :, ::-1].copy())
                 if flip else cache[i] for i, flip in batch_plan]
        losses.append(step(batch))
        scheduler.step()
        if (it + 1) % 20 == 0 or it < 3:
            log(f"accuracy: {step.which} iter {it + 1}/{len(plan)} "
                f"loss {np.mean(losses[-20:]):.3f}")
    return time.perf_counter() - t, losses


def run_accuracy(args: Namespace) -> Report:
    """Both models trained on the same batches; mask AP, Dice, sensitivity on held-out sets."""
    rep = Report("accuracy", f"accuracy ({args.iters} iterations at {args.size} px)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tumor-bench-"))
    register_all()
    real = prepare_real(args, workdir)
    train_sets = ["tumor_synth_train"] + (["bench_real_train"] if real else [])
    test_sets = ["tumor_synth_test"] + (["bench_real_test"] if real else [])
    records = [r for name in train_sets for r in DatasetCatalog.get(name)]
    cache = [load_sample(r, args.size) for r in records]
    rng = np.random.default_rng(args.seed)
    b = args.train_batch
    plan = [[(int(i), bool(rng.random() < 0.5)) for i in rng.choice(len(cache), b,
                                                                     replace=False)]
            for _ in range(args.iters)]
    spec = ModelSpec(size=args.size, detections=args.detections, score_thresh=0.05,
                     device=args.device, norm="bn", tv_config=args.tv_config, seed=args.seed,
                     opts=list(args.opts))
    cfg, ours, tv = build_pair(spec, predictor=False)
    n = args.iters
    warm = max(1, min(100, n // 4))
    sched_cfg = cfg.clone()
    sched_cfg.merge_from_list([
        "SOLVER.MAX_ITER", str(n), "SOLVER.WARMUP_ITERS", str(warm),
        "SOLVER.WARMUP_FACTOR", "0.001", "SOLVER.WARMUP_METHOD", "linear",
        "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "SOLVER.GAMMA", "0.1",
        "SOLVER.STEPS", lr_steps(n, 0.8)])
    train_rows, rows = [], []
    with LoadMonitor() as load:
        trained = {}
        for which, model in zip(MODELS, (ours, tv), strict=True):
            step = TrainStep(which, model, args.lr, args.device, clip=CLIP_NORM)
            secs, losses = _train(step, plan, cache, sched_cfg)
            trained[which] = model.eval()
            finite = [x for x in losses if math.isfinite(x)]
            train_rows.append([which, n, b, secs / 60, secs / n,
                               float(np.mean(finite[-10:])) if finite else float("nan")])
        # a predictor around the model trained here (the random one it builds is replaced)
        predictor = TumorPredictor(with_score_threshold(cfg, 0.0),
                                   PredictorOptions(allow_untrained=True))
        predictor.model = trained["ours"]
        predict = {
            "ours": lambda im: predictor.run_model([im])[0],
            "torchvision": lambda im: tv_to_instances(
                tv_predict(trained["torchvision"], [im[:, :, ::-1]], args.device)[0],
                *im.shape[:2]),
        }
        for name in test_sets:
            count = len(DatasetCatalog.get(name))
            for which in MODELS:
                m = evaluate(predict[which], name)
                rows.append([f"{name} ({count})", which, m["AP"], m["AP50"], m["dice"],
                             m["dice_all"], m["sensitivity"], m["fp_per_image"]])
                log(f"accuracy {name} {which}: AP {m['AP']:.1f} Dice {m['dice']:.3f}")
    n_train = {name: len(DatasetCatalog.get(name)) for name in train_sets}
    rep.add_text(
        f"Both Mask R-CNN R50-FPN from one random initialisation (torchvision's, copied into "
        f"ours), BatchNorm (train mode, nothing frozen) on both sides, trained one after the "
        f"other on the same {n} batches of {b} images "
        f"({', '.join(f'{k}: {v}' for k, v in n_train.items())} slices; shortest edge "
        f"{args.size}, random horizontal flip, the same draws for both), SGD lr {args.lr}, "
        f"momentum 0.9, wd 1e-4, gradient norm clipped at {CLIP_NORM}; Detectron2's "
        f"WarmupMultiStepLR: linear warm-up over {warm} iterations, x0.1 at 80 %; "
        f"{args.threads} threads. Ours: "
        f"`configs/Base-Tumor-RCNN-FPN.yaml` settings (anchors 16-256, 128 RoIs/image); "
        f"torchvision: {args.tv_config} settings (stock: anchors 32-512, 512 RoIs/image). "
        f"Test: shortest edge {args.size}, score threshold 0.05, {args.detections} "
        f"detections/image on both sides. The real split is patient-level "
        f"(`tools/prepare_dataset.py --split 0.6,0.2,0.2 --seed 0`).")
    rep.add_table(train_rows, ["model", "iterations", "batch", "train min", "s/iter",
                               "final loss (mean of last 10)"],
                  floatfmt=("", "g", "g", ".1f", ".2f", ".3f"))
    rep.add_table(rows, ["test set (slices)", "model", "mask AP", "mask AP50", "Dice",
                         "Dice (all)", "lesion sens.", "FP/img"],
                  floatfmt=("", "", ".1f", ".1f", ".3f", ".3f", ".3f", ".2f"))
    rep.add_text(load.summary())
    rep.busy = False  # too expensive to repeat; the load is stated
    return rep
