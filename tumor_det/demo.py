"""The main job (``make demo``): the whole pipeline on the built-in synthetic data.

1. prepare: generate and register the synthetic dataset (``datasets/tumor_synth``);
2. train: ``configs/quick_cpu.yaml`` with :class:`~tumor_det.engine.TumorTrainer` (skipped when
   ``OUTPUT/model/model_final.pth`` exists: delete it, or pass ``--retrain``, to train again);
3. evaluate: mask AP and the tumor metrics on the held-out test patients;
4. splash: held-out slices and a synthetic NIfTI volume through ``tools/splash.py``'s code.

It ends by printing where each output is.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import sys
import time
from pathlib import Path

from tumor_det.checkpoint import TumorCheckpointer
from tumor_det.config import DEFAULT_CONFIG, get_tumor_cfg, resolve_device
from tumor_det.data import SYNTHETIC_NAME, datasets_root, register_all
from tumor_det.data.synthetic import ensure_synthetic_dataset, synthetic_volume
from tumor_det.engine import TumorTrainer
from tumor_det.splash_cli import main as splash_main

import nibabel as nib
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

logger = logging.getLogger("tumor_det.demo")


def quiet_console(log: logging.Logger) -> None:
    """Keep the model's architecture dump in log.txt but off the console."""
    for handler in log.handlers:
        if getattr(handler, "stream", None) is sys.stdout:
            handler.addFilter(lambda record: not record.getMessage().startswith("Model:\n"))


def step(number: int, title: str) -> None:
    print(f"\n==> [{number}/4] {title}", flush=True)


def prepare(root: Path) -> dict[str, list[dict]]:
    """Generate (once) and register the synthetic dataset; print its size per split."""
    ensure_synthetic_dataset(root / SYNTHETIC_NAME)
    register_all(root)
    splits = {s: DatasetCatalog.get(f"{SYNTHETIC_NAME}_{s}") for s in ("train", "val", "test")}
    rows = [(s, len(d), len({r["patient_id"] for r in d}),
             sum(len(r["annotations"]) for r in d),
             sum(not r["annotations"] for r in d)) for s, d in splits.items()]
    print(tabulate(rows, headers=["split", "slices", "patients", "tumors", "tumor-free"],
                   tablefmt="github"))
    return splits


def train(cfg, retrain: bool) -> Path:
    final = Path(cfg.OUTPUT_DIR) / "model_final.pth"
    if final.is_file() and not retrain:
        print(f"Using the model already trained at {final} (--retrain to train again).")
        return final
    start = time.time()
    trainer = TumorTrainer(cfg)
    trainer.resume_or_load(resume=False)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' prints; the logger stays
        trainer.train()
    print(f"Trained {cfg.SOLVER.MAX_ITER} iterations in {time.time() - start:.0f} s.")
    return final


def evaluate(cfg, weights: Path) -> dict:
    """COCO AP + tumor metrics on the test split (training only ever saw train and val)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (f"{SYNTHETIC_NAME}_test",)
    model = TumorTrainer.build_model(cfg)
    TumorCheckpointer(model).load(str(weights))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' prints; the logger stays
        results = TumorTrainer.test(cfg, model)
    tumor, segm = results.get("tumor", {}), results.get("segm", {})
    rows = [
        ("Dice (tumor slices, mean)", tumor.get("dice")),
        ("IoU (tumor slices, mean)", tumor.get("iou")),
        ("lesion sensitivity", tumor.get("sensitivity")),
        ("false positives per slice", tumor.get("fp_per_image")),
        ("slice-level specificity", tumor.get("image_specificity")),
        ("HD95 (mm, median)", tumor.get("hd95_median")),
        ("mask AP (COCO, %)", segm.get("AP")),
        ("mask AP50 (COCO, %)", segm.get("AP50")),
    ]
    print(tabulate([(k, "n/a" if v is None or math.isnan(v) else f"{v:.3f}") for k, v in rows],
                   headers=["held-out test patients", "value"], tablefmt="github"))
    return results


def write_volume(path: Path) -> Path:
    volume, _, affine = synthetic_volume(seed=1, size=256)
    nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("output/demo"))
    parser.add_argument("--config-file", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--retrain", action="store_true", help="train even if a model exists")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args(argv)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    for name in ("detectron2", "tumor_det"):
        quiet_console(setup_logger(str(out / "log.txt"), name=name))
    root = datasets_root()

    step(1, f"Prepare the synthetic MRI dataset ({root / SYNTHETIC_NAME})")
    splits = prepare(root)

    cfg = get_tumor_cfg(args.config_file, ["OUTPUT_DIR", str(out / "model"), *args.opts])
    resolve_device(cfg)
    cfg.freeze()
    step(2, f"Train Mask R-CNN ({args.config_file.name}, {cfg.SOLVER.MAX_ITER} iterations)")
    weights = train(cfg, args.retrain)

    step(3, "Evaluate on the held-out test patients")
    evaluate(cfg, weights)

    step(4, "Splash held-out slices and a synthetic MRI volume")
    test_images = [r["file_name"] for r in splits["test"]][:8]
    volume = write_volume(out / "synthetic_volume.nii.gz")
    splash_dir = out / "splash"
    status = splash_main(["--input", *test_images, str(volume), "--output", str(splash_dir),
                          "--config-file", str(args.config_file), "--weights", str(weights),
                          "--tint"])

    print("\nDone. Outputs:")
    print(tabulate([
        ("dataset (COCO JSON + PNG)", root / SYNTHETIC_NAME),
        ("trained model", weights),
        ("training log, metrics.json, TensorBoard", cfg.OUTPUT_DIR),
        ("per-slice tumor metrics (CSV)",
         Path(cfg.OUTPUT_DIR) / "inference" / f"{SYNTHETIC_NAME}_test"
         / "tumor_metrics_per_image.csv"),
        ("splashes, overlays, masks, results.json/csv", splash_dir),
        ("synthetic scan and its predicted 3D mask", f"{volume}, {splash_dir}"),
    ], tablefmt="plain"))
    return status

