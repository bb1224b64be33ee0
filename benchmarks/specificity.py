#!/usr/bin/env python
"""Benchmark: false positives on tumor-free anatomy, beside Dice, with the merge on and off.

    python benchmarks/specificity.py --weights output/demo/model/model_final.pth

Runs :class:`tumor_det.inference.predictor.TumorPredictor` (``predict_volume``: the slicing and
intensity rule of inference) on

* nibabel's bundled ``tests/data/anatomical.nii`` (a healthy head: every slice tumor-free),
* ``--volumes`` synthetic scans (:func:`tumor_det.data.synthetic.synthetic_volume`, seeds 1..N;
  their label volume says which slices are tumor-free),
* optionally ``--dataset NAME``, a registered dataset of annotated 2D slices (e.g. the real ones,
  prepared with ``tools/prepare_dataset.py``): there a false positive is a detection that
  overlaps no ground-truth tumor (``TUMOR.EVAL.LESION_IOU``),

and prints one table per setting of ``TUMOR.MERGE.ENABLED``: slices, tumor-free slices, those
with a false positive, false positives per tumor-free slice, detections per tumor slice, Dice
(mean over slices with tumor), and for volumes the 3D tumors reported and their volume in mL.
This is measurement, not product: nothing here is imported by ``tumor_det``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.config.config import DEFAULT_CONFIG, get_tumor_cfg
from tumor_det.data import register_all
from tumor_det.data.synthetic import synthetic_volume
from tumor_det.evaluation.evaluator import annotation_mask, lesion_matches
from tumor_det.evaluation.metrics import mask_dice
from tumor_det.inference.predictor import TumorPredictor
from tumor_det.io import load_nifti
from tumor_det.io.geometry import Volume, display_slices

import cv2
import numpy as np
from detectron2.data import DatasetCatalog
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = REPO / "output" / "demo" / "model" / "model_final.pth"
HEADERS = ["dataset", "slices", "tumor-free", "with FP", "FP/tumor-free slice",
           "detections/tumor slice", "Dice", "tumors (3D)", "mL"]


def anatomical_nii() -> Path:
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"




def _row(name: str, per_slice: list[dict], tumors: int | None = None,
         ml: float | None = None) -> dict:
    """Aggregate per-slice counts: ``tumor`` (bool), ``detections``, ``fp``, ``dice``."""
    free = [s for s in per_slice if not s["tumor"]]
    tumor = [s for s in per_slice if s["tumor"]]
    return {
        "dataset": name, "slices": len(per_slice), "tumor-free": len(free),
        "with FP": sum(s["fp"] > 0 for s in free),
        "FP/tumor-free slice": (sum(s["fp"] for s in free) / len(free)) if free else None,
        "detections/tumor slice": (sum(s["detections"] for s in tumor) / len(tumor)
                                   if tumor else None),
        "Dice": float(np.mean([s["dice"] for s in tumor])) if tumor else None,
        "tumors (3D)": tumors, "mL": ml,
    }


def volume_row(predictor: TumorPredictor, name: str, volume: Volume,
               labels: np.ndarray | None, batch_size: int) -> dict:
    """Predict a volume on its axial display slices; ``labels``: its tumor voxels (or None:
    healthy)."""
    pred = predictor.predict_volume(volume, batch_size=batch_size)
    truth = (display_slices(Volume(labels > 0, volume.affine))[0] if labels is not None
             else np.zeros((len(pred.slices), *pred.slices[0].mask.shape), bool))
    per_slice = [{"tumor": bool(gt.any()), "detections": p.num_tumors,
                  "fp": 0 if gt.any() else p.num_tumors, "dice": mask_dice(p.mask, gt)}
                 for p, gt in zip(pred.slices, truth, strict=True)]
    return _row(name, per_slice, pred.num_tumors, pred.volume_ml)


def dataset_row(predictor: TumorPredictor, name: str, lesion_iou: float) -> dict:
    """2D annotated slices: detections overlapping no ground-truth tumor are false positives."""
    per_slice = []
    for record in DatasetCatalog.get(name):
        h, w = record["height"], record["width"]
        gt = [annotation_mask(a, h, w) for a in record.get("annotations", [])
              if not a.get("iscrowd", 0)]
        p = predictor(cv2.imread(record["file_name"], cv2.IMREAD_UNCHANGED))
        _, fp = lesion_matches(list(p.instances.pred_masks.numpy()), gt, lesion_iou)
        union = np.any(gt, axis=0) if gt else np.zeros((h, w), bool)
        per_slice.append({"tumor": bool(gt), "detections": p.num_tumors, "fp": fp,
                          "dice": mask_dice(p.mask, union)})
    row = _row(name, per_slice)
    # here every false positive counts, on tumor slices too (outside the tumor)
    row["with FP"] = sum(s["fp"] > 0 for s in per_slice)
    row["FP/tumor-free slice"] = sum(s["fp"] for s in per_slice) / len(per_slice)
    return row


def measure(cfg, merge: bool, volumes: int, size: int, batch_size: int,
            dataset: str | None) -> list[dict]:
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TUMOR.MERGE.ENABLED = merge
    predictor = TumorPredictor(cfg)
    rows = [volume_row(predictor, "anatomical.nii (healthy)", load_nifti(anatomical_nii()),
                       None, batch_size)]
    for seed in range(1, volumes + 1):
        data, labels, affine = synthetic_volume(seed=seed, size=size)
        rows.append(volume_row(predictor, f"synthetic volume {seed}", Volume(data, affine),
                               labels, batch_size))
    if dataset:
        rows.append(dataset_row(predictor, dataset, cfg.TUMOR.EVAL.LESION_IOU))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    parser.add_argument("--weights", default=str(DEMO_WEIGHTS),
                        help="model checkpoint (default: the demo's)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score threshold (default: the config's TUMOR.EVAL.SCORE_THRESHOLD)")
    parser.add_argument("--merge", choices=["on", "off", "both"], default="both",
                        help="TUMOR.MERGE.ENABLED setting(s) to measure")
    parser.add_argument("--volumes", type=int, default=3, help="synthetic volumes (seeds 1..N)")
    parser.add_argument("--size", type=int, default=256, help="synthetic volume side (px)")
    parser.add_argument("--dataset", default=None,
                        help="also a registered dataset of annotated slices, e.g. brain_tumor_all")
    parser.add_argument("--datasets-root", default=None, help="where --dataset was prepared")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.weights):
        parser.exit(2, f"{parser.prog}: error: no weights at {args.weights} (train one: "
                       "python tools/train_net.py --config-file configs/quick_cpu.yaml)\n")
    opts = ["MODEL.WEIGHTS", args.weights, "MODEL.DEVICE", "cpu", *args.opts]
    if args.threshold is not None:
        opts += ["TUMOR.EVAL.SCORE_THRESHOLD", str(args.threshold)]
    cfg = get_tumor_cfg(args.config_file, opts)
    register_all(args.datasets_root)
    settings = {"on": [True], "off": [False], "both": [True, False]}[args.merge]
    results = {}
    for merge in settings:
        rows = measure(cfg, merge, args.volumes, args.size, args.batch_size, args.dataset)
        results[f"merge {'on' if merge else 'off'}"] = rows
        print(f"\nTUMOR.MERGE.ENABLED {merge}, score threshold "
              f"{args.threshold if args.threshold is not None else cfg.TUMOR.EVAL.SCORE_THRESHOLD}"
              f", weights {args.weights}")
        print(tabulate([[r[h] for h in HEADERS] for r in rows], headers=HEADERS,
                       floatfmt=".3f", missingval="-"))
    if args.dataset:
        print("\nOn --dataset every detection overlapping no ground-truth tumor counts as a "
              "false positive, on tumor slices too (with FP, FP/tumor-free slice: all slices).")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
