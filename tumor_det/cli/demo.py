"""The main job (``make demo``): the whole pipeline on the built-in synthetic data.

1. prepare: generate and register the synthetic dataset (``datasets/tumor_synth``);
2. train: ``configs/quick_cpu.yaml`` with :class:`~tumor_det.engine.trainer.TumorTrainer`
   (skipped when ``OUTPUT/model/model_final.pth`` exists: delete it, or pass ``--retrain``, to
   train again);
3. evaluate: mask AP and the tumor metrics on the held-out test patients;
4. splash: held-out slices and a synthetic scan, as a NIfTI volume and as a DICOM series (a
   scanner's axial MR series; its prediction also as a DICOM-SEG), with ``tools/splash.py``'s
   defaults (:func:`tumor_det.cli.splash.splash`).

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

from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.cli.common import USER_ERRORS, load_config, user_error
from tumor_det.cli.splash import splash as splash_to
from tumor_det.config.config import DEFAULT_CONFIG, get_tumor_cfg, resolve_device
from tumor_det.data import SYNTHETIC_NAME, datasets_root, register_all
from tumor_det.data.synthetic import ensure_synthetic_dataset, synthetic_volume
from tumor_det.engine.trainer import TumorTrainer
from tumor_det.evaluation.cases import evaluate_folder
from tumor_det.evaluation.threshold import filter_candidates_at_threshold
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io import expand_inputs
from tumor_det.io.dicom import lps_grid, write_dicom_series
from tumor_det.io.geometry import Volume
from tumor_det.report.build import report_after_run
from tumor_det.utils.atomic import atomic_path

import nibabel as nib
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

logger = logging.getLogger("tumor_det.cli.demo")


def quiet_console(log: logging.Logger) -> None:
    """Keep the model's architecture dump in log.txt but off the console."""
    for handler in log.handlers:
        if getattr(handler, "stream", None) is sys.stdout:
            handler.addFilter(lambda record: not record.getMessage().startswith("Model:\n"))


STEPS = 5


def step(number: int, title: str) -> None:
    print(f"\n==> [{number}/{STEPS}] {title}", flush=True)


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


def write_scans(out: Path) -> tuple[Path, Path]:
    """The synthetic scan as ``synthetic_volume.nii.gz`` (its tumor label volume in
    ``labels/``) and as the DICOM series ``synthetic_series/`` (a scanner's axial grid:
    :func:`~tumor_det.io.dicom.lps_grid`)."""
    data, labels, affine = synthetic_volume(seed=1, size=256)
    nifti = out / "synthetic_volume.nii.gz"
    for path, array in ((nifti, data.astype(np.int16)),
                        (out / "labels" / nifti.name, labels.astype(np.uint8))):
        with atomic_path(path) as tmp:
            nib.save(nib.Nifti1Image(array, affine), str(tmp))
    series = out / "synthetic_series"
    write_dicom_series(lps_grid(Volume(data, affine)), series,
                       description="tumor-det demo synthetic scan")
    return nifti, series


def splash(out: Path, images: list[str], config_file: Path, weights: Path,
           ) -> tuple[int, Path, Path, Path]:
    """Step 4: splash ``images`` and the synthetic scan (NIfTI and DICOM series) into
    ``out/splash`` as ``tools/splash.py --config-file CONFIG --weights W --tint`` does; returns
    the exit status, that folder, the NIfTI and the series folder."""
    nifti, series = write_scans(out)
    splash_dir = out / "splash"
    cfg, resolved = load_config(str(config_file), [], [str(weights)])
    filter_candidates_at_threshold(cfg)
    options = PredictorOptions(fuse=True, channels_last=True, skip_empty=True,
                               tta=cfg.TEST.AUG.ENABLED)
    predictor = TumorPredictor.from_weights(cfg, resolved, None, options)
    sources = expand_inputs([*images, str(nifti), str(series)])
    status = splash_to(predictor, sources, splash_dir, tint=True)
    return status, splash_dir, nifti, series


def main(argv: list[str] | None = None) -> int:
    """``tools/demo.py``: the exit status of the splash step; 2 (one ``demo.py: error:`` line)
    for a bad config file, key or value, or weights that cannot be found."""
    try:
        return run(argv)
    except USER_ERRORS as exc:
        return user_error("demo.py", exc)


def run(argv: list[str] | None = None) -> int:
    """The demo's steps (:func:`main` without the user-error handling)."""
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
    results = evaluate(cfg, weights)

    step(4, "Splash held-out slices and a synthetic MRI scan (NIfTI and DICOM series)")
    test_images = [r["file_name"] for r in splits["test"]][:8]
    status, splash_dir, volume, series = splash(out, test_images, args.config_file, weights)

    step(5, "Evaluate the scan in 3D against its label volume (per case)")
    summary = evaluate_folder(splash_dir, out / "labels", out / "eval", progress=False)
    metrics = summary["metrics"]
    lesions = summary["lesions"]

    def mean(name: str) -> str:
        value = metrics[name]["mean"]
        return "n/a" if value is None else f"{value:.3f}"

    print(tabulate([("3D Dice", mean("dice")), ("HD95 (mm)", mean("hd95_mm")),
                    ("lesions found / true", f"{lesions['found']} / {lesions['true']}"),
                    ("false-positive lesions", lesions["false_positives"]),
                    ("volume error (mL)", mean("volume_error_ml"))],
                   headers=["synthetic scan", "value"], tablefmt="github"))

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
        ("the scan as a DICOM series and its DICOM-SEG",
         f"{series}, {splash_dir / (series.name + '_seg.dcm')}"),
        ("per-case 3D evaluation (per_case.csv, summary.json)", out / "eval"),
    ], tablefmt="plain"))
    report = report_after_run(cfg.OUTPUT_DIR, "evaluation", command=["demo.py", *(argv or [])],
                              config_file=next((p for p in [Path(cfg.OUTPUT_DIR) / "config.yaml"]
                                                if p.is_file()), args.config_file),
                              weights=[str(weights)])
    tumor = results.get("tumor", {})
    print("\nHeadline (held-out test patients): " + ", ".join(
        f"{name} {tumor[key]:.3f}" for name, key in (
            ("Dice", "dice"), ("lesion sensitivity", "sensitivity"),
            ("FP per slice", "fp_per_image"), ("specificity", "image_specificity"))
        if isinstance(tumor.get(key), float) and not math.isnan(tumor[key])))
    if report is not None:
        print(f"Open the report: {report} (and the splash run's: {splash_dir / 'report.html'})")
    return status

