#!/usr/bin/env python
"""Benchmark: train from scratch on the 46 real slices with a patient-level hold-out.

    python benchmarks/real_slices.py --iters 600 --size 320

Prepares ``../shared/datasets/brain_tumor_mri/train`` (VIA) into a temporary dataset with
``tools/prepare_dataset.py``'s code (patient-level split 0.6/0.2/0.2, seed 0), trains
``--config-file`` (default: the quick CPU config) for ``--iters`` iterations at ``--size`` px,
evaluates the final model on the held-out test patients (COCO mask AP + tumor metrics) and
appends a section to ``benchmarks/RESULTS.md``. The shared data is only read by this benchmark;
the product never needs it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from tumor_det.config.config import DEFAULT_CONFIG, get_tumor_cfg, resolve_device
from tumor_det.data import register_all
from tumor_det.data.prepare import PrepareOptions, prepare
from tumor_det.engine.trainer import TumorTrainer
from tumor_det.utils.atomic import write_text

import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "brain_tumor_mri" / "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--size", type=int, default=320, help="short edge at train and test")
    parser.add_argument("--weights", default="",
                        help="initial weights, e.g. output/demo/model/model_final.pth (the demo's "
                        "synthetic-data model); default: none (from scratch)")
    parser.add_argument("--input", type=Path, default=SHARED)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    if not args.input.is_dir():
        sys.exit(f"{args.input}: not found (this benchmark reads the shared seed data)")
    setup_logger()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "datasets"
        print(prepare(PrepareOptions(format="via", input=args.input, output=root / "brain_tumor",
                                     split="0.6,0.2,0.2", seed=0)).summary())
        register_all(root)
        counts = {s: len(DatasetCatalog.get(f"brain_tumor_{s}")) for s in ("train", "val",
                                                                            "test")}
        s = args.size
        cfg = get_tumor_cfg(args.config_file, [
            "TUMOR.DATASETS_ROOT", str(root), "OUTPUT_DIR", str(Path(tmp) / "out"),
            "DATASETS.TRAIN", '("brain_tumor_train",)', "DATASETS.TEST", '("brain_tumor_test",)',
            "INPUT.MIN_SIZE_TRAIN", f"({int(s * 0.875)}, {s}, {int(s * 1.125)})",
            "INPUT.MAX_SIZE_TRAIN", str(2 * s), "INPUT.MIN_SIZE_TEST", str(s),
            "INPUT.MAX_SIZE_TEST", str(2 * s), "SOLVER.MAX_ITER", str(args.iters),
            "SOLVER.STEPS", f"({int(args.iters * 0.75)}, {int(args.iters * 0.92)})",
            "SOLVER.CHECKPOINT_PERIOD", str(10 * args.iters), "TEST.EVAL_PERIOD", "0",
            "MODEL.WEIGHTS", args.weights,
        ])
        resolve_device(cfg)
        start = time.time()
        trainer = TumorTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        minutes = (time.time() - start) / 60
        results = TumorTrainer.test(cfg, trainer.model)
    tumor, segm = results["tumor"], results["segm"]
    rows = [
        ("mask AP / AP50 (COCO, %)", f"{segm['AP']:.1f} / {segm['AP50']:.1f}"),
        (f"Dice (tumor slices, score ≥ {cfg.TUMOR.EVAL.SCORE_THRESHOLD})", f"{tumor['dice']:.3f}"),
        ("lesion sensitivity", f"{tumor['sensitivity']:.3f}"),
        ("false positives per slice", f"{tumor['fp_per_image']:.2f}"),
        ("HD95 (px, median)", f"{tumor['hd95_median']:.1f}"),
    ]
    command = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    text = [
        f"\n## Real slices: {'fine-tuning' if args.weights else 'training from scratch'} "
        f"({datetime.date.today()})\n",
        f"`{command}` — {args.config_file.name}, "
        f"{'initialised from ' + args.weights if args.weights else 'from scratch'}, "
        f"{args.iters} iterations at {s} px, "
        f"{minutes:.1f} min of training on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__}). "
        f"Patient-level split of the 46 slices (seed 0): {counts['train']} train / "
        f"{counts['val']} val / {counts['test']} test slices; metrics on the test patients.\n",
        "| metric | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
    ]
    print("\n".join(text))
    old = args.results.read_text() if args.results.is_file() else ""
    write_text(args.results, old + "\n".join(text) + "\n")


if __name__ == "__main__":
    main()
