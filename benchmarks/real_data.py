#!/usr/bin/env python
"""Benchmark: a model on real held-out slices, per source, with FROC and merge variants.

    python benchmarks/real_data.py --config-file configs/real_mri_cpu.yaml \\
        --weights output/real_mri_cpu/model_0000999.pth output/real_mri_cpu/model_final.pth \\
        --test figshare_boxes_fold0 br35h_fold0 tumor_free_fold0 brain_tumor_mri_all \\
        --val figshare_boxes_fold1 br35h_fold1 tumor_free_fold1 --output output/real_mri_eval

For each checkpoint (a learning curve when several are given) and each registered dataset it
runs the model once (Detectron2's test loader, ``SCORE_THRESH_TEST`` 0.05, the merge off), then
scores the same detections

* through Detectron2's ``COCOEvaluator`` (box AP/AP50; mask AP where the ground truth has
  outlines) and the project's ``TumorEvaluator`` (Dice, lesion and box-level sensitivities, FP
  per slice, tumor-free slices kept clean) at each score threshold of ``--thresholds`` (the
  FROC: sensitivity against FP per slice);
* with each ``--merge`` rule applied first (``off``; ``best``: one detection per tumor, the
  kept detection's own mask; ``union``: the former rule that grows a kept mask);

chooses the operating point on the ``--val`` datasets (the highest threshold whose pooled
box sensitivity at IoU >= 0.5 is within 0.02 of the best, i.e. the fewest false positives for
that sensitivity) and reports the ``--test`` datasets at it, plus nibabel's healthy
``anatomical.nii`` through ``TumorPredictor.predict_volume`` (false lesions, their volume).
Writes ``<output>/real_data.json`` and prints markdown tables. Measurement, not product.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.config.config import get_tumor_cfg
from tumor_det.data import register_all
from tumor_det.data.sampling import has_outlines
from tumor_det.evaluation.evaluator import TumorEvaluator
from tumor_det.modeling.postprocessing import merge_instances

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MERGES = ("off", "best", "union")
KEYS = ("box_sensitivity50", "box_sensitivity_any", "box_fp_per_image", "sensitivity",
        "fp_per_image", "dice", "image_specificity")


def _merged(instances, rule: str, cfg):
    if rule == "off":
        return instances
    m = cfg.TUMOR.MERGE
    return merge_instances(instances, m.IOU, m.CONTAINMENT, 0.0, mask=rule)


def score_dataset(model, cfg, name: str, thresholds, merges, out_dir: Path) -> dict:
    """COCO AP and tumor metrics per (merge rule, threshold) of one model run on ``name``."""
    tasks = ("bbox", "segm") if has_outlines(name) else ("bbox",)
    coco = {r: COCOEvaluator(name, tasks=tasks, distributed=False, use_fast_impl=False,
                             output_dir=str(out_dir / f"{name}_{r}")) for r in merges}
    tumor = {(r, t): TumorEvaluator(name, score_threshold=t, lesion_iou=cfg.TUMOR.EVAL.LESION_IOU)
             for r in merges for t in thresholds}
    for ev in [*coco.values(), *tumor.values()]:
        ev.reset()
    start, images = time.time(), 0
    with torch.inference_mode():
        for inputs in build_detection_test_loader(cfg, name):
            outputs = model(inputs)
            images += len(inputs)
            for r in merges:
                merged = [{"instances": _merged(o["instances"].to("cpu"), r, cfg)}
                          for o in outputs]
                coco[r].process(inputs, merged)
                for t in thresholds:
                    tumor[(r, t)].process(inputs, merged)
    result: dict = {"images": images, "seconds": round(time.time() - start, 1)}
    for r in merges:
        ap = coco[r].evaluate() or {}
        result[r] = {"bbox_AP50": ap.get("bbox", {}).get("AP50", math.nan),
                     "bbox_AP": ap.get("bbox", {}).get("AP", math.nan),
                     "segm_AP50": ap.get("segm", {}).get("AP50", math.nan),
                     "by_threshold": {str(t): tumor[(r, t)].evaluate()["tumor"]
                                      for t in thresholds}}
    return result


def operating_point(val: dict[str, dict], merge: str, thresholds) -> float:
    """The highest threshold whose mean box sensitivity (IoU >= 0.5) over the validation
    datasets with tumors is within 0.02 of the best one."""
    def sens(t: float) -> float:
        values = [v[merge]["by_threshold"][str(t)]["box_sensitivity50"] for v in val.values()]
        values = [x for x in values if not math.isnan(x)]
        return sum(values) / len(values) if values else 0.0

    best = max(sens(t) for t in thresholds)
    return max(t for t in thresholds if sens(t) >= best - 0.02)


def healthy_volume(cfg, weights: str, threshold: float, merge: str) -> dict:
    """False lesions on nibabel's healthy ``anatomical.nii`` (TumorPredictor.predict_volume)."""
    from tumor_det.inference.predictor import TumorPredictor
    from tumor_det.io import load_nifti

    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    vcfg = cfg.clone()
    vcfg.defrost()
    vcfg.MODEL.WEIGHTS = weights
    vcfg.TUMOR.EVAL.SCORE_THRESHOLD = threshold
    vcfg.TUMOR.MERGE.ENABLED = merge != "off"
    if merge != "off":
        vcfg.TUMOR.MERGE.MASK = merge
    vol = TumorPredictor(vcfg).predict_volume(load_nifti(path))
    return {"false_lesions": vol.num_tumors, "volume_ml": round(vol.volume_ml, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", nargs="+", required=True)
    parser.add_argument("--test", nargs="+", required=True, help="registered datasets")
    parser.add_argument("--val", nargs="*", default=[], help="datasets for the operating point")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS)
    parser.add_argument("--merge", nargs="+", choices=MERGES, default=list(MERGES))
    parser.add_argument("--output", type=Path, default=Path("output/real_data_eval"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args(argv)
    cfg = get_tumor_cfg(args.config_file, args.opts)
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = min(0.05, *args.thresholds)
    cfg.TUMOR.MERGE.ENABLED = False  # the merge rules are applied here, on the same detections
    cfg.freeze()
    register_all(cfg.TUMOR.DATASETS_ROOT or None)
    args.output.mkdir(parents=True, exist_ok=True)
    report: dict = {"config": args.config_file, "checkpoints": {}}
    for weights in args.weights:
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(weights)
        entry: dict = {"val": {}, "test": {}}
        for name in args.val:
            entry["val"][name] = score_dataset(model, cfg, name, args.thresholds, args.merge,
                                               args.output)
        for name in args.test:
            entry["test"][name] = score_dataset(model, cfg, name, args.thresholds, args.merge,
                                                args.output)
        entry["operating_point"] = {
            r: (operating_point(entry["val"], r, args.thresholds) if entry["val"]
                else cfg.TUMOR.EVAL.SCORE_THRESHOLD) for r in args.merge}
        entry["anatomical_nii"] = {r: healthy_volume(cfg, weights, entry["operating_point"][r],
                                                     r) for r in args.merge}
        report["checkpoints"][weights] = entry
        (args.output / "real_data.json").write_text(json.dumps(report, indent=1, default=str))
        print(markdown(weights, entry), flush=True)
    return report


def _f(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else (
        f"{x:.3f}" if isinstance(x, float) else str(x))


def markdown(weights: str, entry: dict) -> str:
    """Tables for one checkpoint: each test dataset at the operating point, per merge rule."""
    lines = [f"\n### {weights}\n"]
    for r, t in entry["operating_point"].items():
        lines += [f"merge `{r}`, operating point {t} (chosen on the validation folds); "
                  f"anatomical.nii: {entry['anatomical_nii'][r]}", "",
                  "| dataset | images | box sens. IoU≥0.5 | any overlap | box FP/slice | "
                  "lesion sens. | FP/slice | Dice | clean tumor-free | box AP50 | mask AP50 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, res in entry["test"].items():
            m = res[r]["by_threshold"][str(t)]
            lines.append(f"| {name} | {res['images']} | " + " | ".join(_f(m.get(k)) for k in KEYS)
                         + f" | {_f(res[r]['bbox_AP50'])} | {_f(res[r]['segm_AP50'])} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
