"""Cross-validation: the operating point from saved predictions, and tools/cross_validate.py
end to end (per-fold and pooled metrics, best checkpoints, --resume)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tumor_det.config.config import get_config_file, get_tumor_cfg
from tumor_det.data import register_all
from tumor_det.engine.cross_validation import fold_datasets
from tumor_det.evaluation.evaluator import annotation_mask
from tumor_det.evaluation.pooled import (
    THRESHOLDS,
    evaluate_at,
    operating_point,
    pooled_mask_ap,
    threshold_scan,
)

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog
from toy_data import write_toy_dataset

REPO = Path(__file__).resolve().parents[1]
CV = [sys.executable, str(REPO / "tools" / "cross_validate.py"), "--config-file",
      str(get_config_file("quick_cpu.yaml"))]


def _prediction(image_id: int, mask: np.ndarray, score: float) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return {"image_id": image_id, "category_id": 1, "score": score, "segmentation": rle,
            "bbox": [float(v) for v in mask_util.toBbox(rle)]}


def _gt_mask(name: str, image_id: int) -> np.ndarray:
    record = next(r for r in DatasetCatalog.get(name) if r["image_id"] == image_id)
    return annotation_mask(record["annotations"][0], record["height"], record["width"])


def test_operating_point_from_saved_predictions(tmp_path):
    root = tmp_path / "datasets"
    write_toy_dataset(root, name="opcv", counts={"fold0": 4, "fold1": 4})  # id 4: no tumor
    register_all(root)
    names = fold_datasets("opcv")
    assert names == ["opcv_fold0", "opcv_fold1"]
    fp = np.zeros((64, 64), bool)
    fp[2:10, 2:10] = True
    # fold0: slice 1 found at 0.9, slice 2 at 0.4, slice 3 missed, a false positive at 0.2 on
    # the tumor-free slice 4; fold1: nothing predicted (tumor-free slice 4 right)
    files = [tmp_path / "fold0.json", tmp_path / "fold1.json"]
    files[0].write_text(json.dumps([_prediction(1, _gt_mask(names[0], 1), 0.9),
                                    _prediction(2, _gt_mask(names[0], 2), 0.4),
                                    _prediction(4, fp, 0.2)]))
    files[1].write_text("[]")

    scan = threshold_scan(names, files)
    assert [s["threshold"] for s in scan] == list(THRESHOLDS)
    by_t = {s["threshold"]: s for s in scan}
    # per slice: Dice 1 where found (or nothing on a tumor-free slice), else 0; 8 slices
    assert by_t[0.1]["dice_all"] == pytest.approx(3 / 8)  # the false positive counts
    assert by_t[0.3]["dice_all"] == pytest.approx(4 / 8)
    assert by_t[0.5]["dice_all"] == pytest.approx(3 / 8)
    assert by_t[0.95]["dice_all"] == pytest.approx(2 / 8)
    assert by_t[0.3]["dice"] == pytest.approx(2 / 6)
    op = operating_point(scan)
    assert op["threshold"] == 0.3  # the middle of the best run 0.25 ... 0.40

    cfg = get_tumor_cfg(get_config_file("quick_cpu.yaml"))
    per_fold, records = evaluate_at(cfg, names, files, 0.3,
                                    [tmp_path / "op0", tmp_path / "op1"])
    assert len(records) == 8
    assert [m["dice_all"] for m in per_fold] == pytest.approx([3 / 4, 1 / 4])
    assert per_fold[0]["fp_per_image"] == 0 and per_fold[0]["sensitivity"] == pytest.approx(2 / 3)
    ap = pooled_mask_ap(names, files)
    assert 0 < ap["mask_AP"] < 100


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_missing_folds_exit_2(tmp_path):
    root = tmp_path / "datasets"
    write_toy_dataset(root, name="nofolds", counts={"train": 2})
    result = _run(CV + ["--dataset", "nofolds", "TUMOR.DATASETS_ROOT", str(root)])
    assert result.returncode == 2
    assert result.stdout.strip().splitlines()[-1].startswith(
        "cross_validate.py: error: dataset 'nofolds' has 0 registered fold(s)")


@pytest.mark.slow
def test_cross_validate_and_resume(tmp_path):
    root = tmp_path / "datasets"
    write_toy_dataset(root, name="toycv", counts={"fold0": 4, "fold1": 4, "fold2": 4})
    out = tmp_path / "cv"
    opts = ["TUMOR.DATASETS_ROOT", str(root), "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MIN_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
            "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2",
            "OUTPUT_DIR", str(out), "SEED", "1"]
    result = _run(CV + ["--dataset", "toycv", "--folds", "3"] + opts)
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("Starting training from iteration 0") == 3

    summary = json.loads((out / "cv_summary.json").read_text())
    plain = summary["variants"]["inference"]
    assert len(plain["per_fold"]) == 3
    for key in ("dice", "sensitivity", "fp_per_image", "image_specificity", "hd95", "mask_AP"):
        assert all(key in row for row in (*plain["per_fold"], plain["mean"], plain["std"],
                                          plain["pooled"]))
    assert plain["pooled"]["images"] == 12 and plain["pooled"]["tumor_images"] == 9
    assert [row["images"] for row in plain["per_fold"]] == [4, 4, 4]
    for k in range(3):
        fold = out / f"fold{k}"
        assert (fold / "model_best.pth").is_file() and (fold / "model_final.pth").is_file()
        assert json.loads((fold / "cv_fold_metrics.json").read_text())["train_datasets"] == [
            f"toycv_fold{j}" for j in range(3) if j != k]

    # the operating point: a scanned threshold, and its pooled Dice recomputed from the saved
    # predictions by the TumorEvaluator (MONAI's Dice) is the recorded one
    threshold = summary["operating_point"]["score_threshold"]
    assert threshold in THRESHOLDS
    assert plain["operating_point"]["score_threshold"] == threshold
    register_all(root)
    names = fold_datasets("toycv", 3)
    files = [out / f"fold{k}" / "inference" / name / "coco_instances_results.json"
             for k, name in enumerate(names)]
    _, records = evaluate_at(get_tumor_cfg(get_config_file("quick_cpu.yaml")), names, files,
                             threshold, [tmp_path / f"check{k}" for k in range(3)])
    assert np.mean([r["dice"] for r in records]) == pytest.approx(
        plain["operating_point"]["dice_all"], abs=1e-6)
    assert max(s["dice_all"] for s in plain["threshold_scan"]) == pytest.approx(
        plain["operating_point"]["dice_all"])
    final = get_tumor_cfg(out / "config.yaml")
    assert final.TUMOR.EVAL.SCORE_THRESHOLD == threshold
    assert list(final.DATASETS.TRAIN) == names
    assert "| pooled |" in (out / "cv_summary.md").read_text()

    # --resume: finished folds are skipped; the unfinished one (its metrics file gone, as after
    # a kill during its evaluation) continues from its last checkpoint, past MAX_ITER: no step
    (out / "fold2" / "cv_fold_metrics.json").unlink()
    # (the resumed fold's final evaluation may save its model_best.pth again)
    saved = [p for p in out.glob("fold*/model_*.pth")
             if p.parts[-2:] != ("fold2", "model_best.pth")]
    before = {p: p.stat().st_mtime_ns for p in saved}
    result = _run(CV + ["--dataset", "toycv", "--folds", "3", "--resume"] + opts)
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("finished: skipped") == 2
    assert "Starting training from iteration 2" in result.stdout
    assert "Starting training from iteration 0" not in result.stdout
    assert before == {p: p.stat().st_mtime_ns for p in saved}
    assert json.loads((out / "cv_summary.json").read_text())["variants"]["inference"][
        "pooled"]["images"] == 12
