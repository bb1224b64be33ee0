"""Accuracy benchmarks: input-size trade-off (``sizes``) and both models trained alike
(``accuracy``): COCO mask AP, Dice and lesion sensitivity on the same held-out images."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
import tempfile
from argparse import Namespace
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.bench.common import (
    LoadMonitor,
    ModelSpec,
    Report,
    Sample,
    build_pair,
    interleaved,
    log,
    median,
    now,
    ours_predict,
    synthetic_samples,
    to_d2_inputs,
    to_tv_inputs,
    tv_predict,
    tv_to_instances,
)
from tumor_det.config import get_tumor_cfg
from tumor_det.data import register_all
from tumor_det.data.catalog import register_coco_split
from tumor_det.evaluation import TumorEvaluator, annotation_mask
from tumor_det.predictor import TumorPredictor

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage

REPO = Path(__file__).resolve().parents[2]
CLIP_NORM = 5.0  # gradient-norm clipping in the accuracy task (both models)


# ----------------------------------------------------------------------------- evaluation


def coco_results(image_id, inst: Instances, category_id: int) -> list[dict]:
    """COCO result entries (RLE masks) of one image's instances."""
    out = []
    for mask, score in zip(inst.pred_masks.numpy(), inst.scores.tolist(), strict=True):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"image_id": image_id, "category_id": category_id, "segmentation": rle,
                    "score": float(score)})
    return out


def coco_mask_ap(json_file: str, results: list[dict], image_ids: list) -> tuple[float, float]:
    """pycocotools COCOeval ``segm``: (AP, AP50) in percent on ``image_ids``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "segm")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return 100 * max(float(ev.stats[0]), 0.0), 100 * max(float(ev.stats[1]), 0.0)


def category_id(dataset: str) -> int:
    with open(MetadataCatalog.get(dataset).json_file) as f:
        return int(json.load(f)["categories"][0]["id"])


def evaluate(predict, dataset: str, timings: list[float] | None = None) -> dict[str, float]:
    """Run ``predict(bgr_image) -> Instances`` on a registered dataset: tumor metrics (score >=
    0.5, lesion IoU >= 0.1) and COCO mask AP (all instances)."""
    records = DatasetCatalog.get(dataset)
    evaluator = TumorEvaluator(dataset, score_threshold=0.5, lesion_iou=0.1)
    evaluator.reset()
    cat = category_id(dataset)
    results = []
    for r in records:
        image = cv2.imread(r["file_name"], cv2.IMREAD_COLOR)
        t = now()
        inst = predict(image)
        if timings is not None:
            timings.append(now() - t)
        evaluator.process([{"image_id": r["image_id"]}], [{"instances": inst}])
        results += coco_results(r["image_id"], inst, cat)
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = dict(evaluator.evaluate()["tumor"])
    metrics["AP"], metrics["AP50"] = coco_mask_ap(MetadataCatalog.get(dataset).json_file,
                                                  results, [r["image_id"] for r in records])
    return metrics


# ----------------------------------------------------------------------------- sizes


def train_quick(args: Namespace, workdir: Path) -> tuple[str, float]:
    """Train ``args.config`` for ``args.iters`` iterations with tools/train_net.py."""
    out = workdir / "sizes_train"
    n = args.iters
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", args.config,
           "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", str(n),
           "SOLVER.STEPS", f"({int(0.75 * n)}, {int(0.9 * n)})",
           "SOLVER.WARMUP_ITERS", str(min(50, n // 4)), "SOLVER.CHECKPOINT_PERIOD", str(10 * n),
           "TEST.EVAL_PERIOD", "0", "MODEL.DEVICE", "cpu"]
    log("training: " + " ".join(cmd))
    t = now()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return str(out / "model_final.pth"), now() - t


def run_sizes(args: Namespace) -> Report:
    """Latency of both R50-FPN models and Dice of a briefly trained model per test size."""
    rep = Report("sizes", "input size: speed / accuracy")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tumor-bench-"))
    register_all()
    if args.weights:
        weights, how = args.weights, f"`{args.weights}` (given with --weights)"
    else:
        weights, secs = train_quick(args, workdir)
        how = (f"trained here for {args.iters} iterations of `{Path(args.config).name}` "
               f"({secs / 60:.1f} min)")
    rows = []
    val0 = cv2.imread(DatasetCatalog.get("tumor_synth_val")[0]["file_name"], cv2.IMREAD_COLOR)
    with LoadMonitor() as load:
        for size in args.sizes:
            spec = ModelSpec(size=size, detections=args.detections, device=args.device,
                             tv_config=args.tv_config, seed=args.seed, opts=list(args.opts))
            _, ours, tv = build_pair(spec)
            # a synthetic slice drawn at the test size: both models see size x size pixels
            imgs = [synthetic_samples(1, size, seed=args.seed + 1)[0].image]
            times = interleaved({"ours": lambda o=ours, x=imgs: ours_predict(o, x),
                                 "torchvision": lambda m=tv, x=imgs: tv_predict(m, x, args.device)},
                                args.reps, args.warmup, args.device)
            del ours, tv
            cfg = get_tumor_cfg(args.config, [
                "MODEL.WEIGHTS", weights, "MODEL.DEVICE", args.device,
                "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(2 * size)])
            predictor = TumorPredictor(cfg, score_threshold=0.0)
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
    """One record as an RGB image resized to shortest edge ``size`` (max 2x) with its masks."""
    image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)[:, :, ::-1]
    h, w = image.shape[:2]
    masks = [annotation_mask(a, h, w) for a in record.get("annotations", [])
             if not a.get("iscrowd", 0)]
    scale = min(size / min(h, w), 2 * size / max(h, w))
    nh, nw = int(round(h * scale)), int(round(w * scale))
    image = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=cv2.INTER_LINEAR)
    stack = np.stack([cv2.resize(m.astype(np.uint8), (nw, nh),
                                 interpolation=cv2.INTER_NEAREST) for m in masks]).astype(bool) \
        if masks else np.zeros((0, nh, nw), bool)
    stack = stack[stack.reshape(len(stack), -1).any(1)] if len(stack) else stack
    return Sample(image, stack)


def prepare_real(args: Namespace, workdir: Path) -> bool:
    """tools/prepare_dataset.py on the real VIA slices; register ``bench_real_<split>``."""
    if not (Path(args.real) / "via_region_data.json").is_file():
        log(f"accuracy: {args.real} not found: synthetic data only")
        return False
    out = workdir / "brain_tumor"
    if not (out / "annotations" / "test.json").is_file():
        subprocess.run([sys.executable, str(REPO / "tools" / "prepare_dataset.py"), "--format",
                        "via", "--input", args.real, "--output", str(out), "--split",
                        "0.6,0.2,0.2", "--seed", "0"], check=True, stdout=subprocess.DEVNULL)
    for split in ("train", "val", "test"):
        register_coco_split(f"bench_real_{split}", out / "annotations" / f"{split}.json",
                            out / "images")
    return True


def _train(which: str, model, plan, cache, args: Namespace) -> tuple[float, list[float]]:
    """SGD (momentum 0.9, wd 1e-4, gradient norm clipped), linear warm-up over a quarter,
    x0.1 at 80 %; returns (seconds, losses)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    warm = max(1, min(100, args.iters // 4))
    model.train()
    losses = []
    t = now()
    for it, batch_plan in enumerate(plan):
        lr = args.lr * (min(1.0, 0.001 + (it + 1) / warm)) * (0.1 if it >= 0.8 * len(plan)
                                                                 else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = []
        for idx, flip in batch_plan:
            s = cache[idx]
            batch.append(Sample(s.image[:, ::-1].copy(), s.masks[:, :, ::-1].copy())
                         if flip else s)
        if which == "ours":
            with EventStorage(it):  # Detectron2 logs into it during training
                loss_dict = model(to_d2_inputs(batch))
        else:
            loss_dict = model(*to_tv_inputs(batch, args.device))
        loss = sum(loss_dict.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
        opt.step()
        losses.append(float(loss.detach()))
        if (it + 1) % 20 == 0 or it < 3:
            log(f"accuracy: {which} iter {it + 1}/{len(plan)} loss {np.mean(losses[-20:]):.3f}")
    return now() - t, losses


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
    train_rows, rows = [], []
    with LoadMonitor() as load:
        trained = {}
        for which, model in (("ours", ours), ("torchvision", tv)):
            secs, losses = _train(which, model, plan, cache, args)
            trained[which] = model.eval()
            finite = [x for x in losses if math.isfinite(x)]
            train_rows.append([which, args.iters, b, secs / 60, secs / args.iters,
                               float(np.mean(finite[-10:])) if finite else float("nan")])
        predictor = TumorPredictor(cfg, score_threshold=0.0)
        predictor.model = trained["ours"]
        predict = {
            "ours": lambda im: ours_predict(predictor, [im])[0],
            "torchvision": lambda im: tv_to_instances(
                tv_predict(trained["torchvision"], [im[:, :, ::-1]], args.device)[0],
                *im.shape[:2]),
        }
        for name in test_sets:
            n = len(DatasetCatalog.get(name))
            for which in ("ours", "torchvision"):
                m = evaluate(predict[which], name)
                rows.append([f"{name} ({n})", which, m["AP"], m["AP50"], m["dice"],
                             m["dice_all"], m["sensitivity"], m["fp_per_image"]])
                log(f"accuracy {name} {which}: AP {m['AP']:.1f} Dice {m['dice']:.3f}")
    n_train = {name: len(DatasetCatalog.get(name)) for name in train_sets}
    rep.add_text(
        f"Both Mask R-CNN R50-FPN from one random initialisation (torchvision's, copied into "
        f"ours), BatchNorm (train mode, nothing frozen) on both sides, trained one after the "
        f"other on the same {args.iters} batches of {b} images "
        f"({', '.join(f'{k}: {v}' for k, v in n_train.items())} slices; shortest edge "
        f"{args.size}, random horizontal flip, the same draws for both), SGD lr {args.lr}, "
        f"momentum 0.9, wd 1e-4, gradient norm clipped at {CLIP_NORM}, linear warm-up over "
        f"the first quarter, x0.1 at 80 %; {args.threads} threads. Ours: "
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
