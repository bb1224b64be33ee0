"""The tumor evaluator's metrics against hand-computed cases."""

from __future__ import annotations

import math

import tumor_det  # noqa: F401
from tumor_det.evaluation import TumorEvaluator, aggregate, lesion_matches, region_metrics

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Instances


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_dice_iou_of_shifted_squares():
    gt = square(64, 10, 10, 20)     # 400 px
    pred = square(64, 10, 15, 20)   # shifted 5 px right: overlap 20x15 = 300 px
    m = region_metrics(pred, gt, None)
    assert m["dice"] == pytest.approx(2 * 300 / 800)
    assert m["iou"] == pytest.approx(300 / 500)


def test_hd95_in_pixels_and_mm():
    gt = square(64, 10, 10, 20)
    pred = square(64, 10, 13, 20)   # every boundary point is at most 3 px (columns) away
    assert region_metrics(pred, gt, None)["hd95"] == pytest.approx(3.0)
    # With 0.5 mm rows and 2 mm columns, the 3-column shift is 6 mm.
    assert region_metrics(pred, gt, (0.5, 2.0))["hd95"] == pytest.approx(6.0)
    assert region_metrics(gt, gt, (1.0, 1.0))["hd95"] == 0.0


def test_empty_cases():
    empty = np.zeros((32, 32), bool)
    gt = square(32, 4, 4, 8)
    assert region_metrics(empty, empty, None)["dice"] == 1.0
    assert region_metrics(empty, gt, None)["dice"] == 0.0
    assert region_metrics(gt, empty, None)["dice"] == 0.0
    assert math.isnan(region_metrics(empty, gt, None)["hd95"])


def test_lesion_matching_counts_found_and_false_positives():
    a, b = square(64, 2, 2, 10), square(64, 40, 40, 10)
    near_a = square(64, 4, 4, 10)          # IoU with a = 64/136 ≈ 0.47
    elsewhere = square(64, 2, 40, 8)
    assert lesion_matches([near_a, elsewhere], [a, b], 0.1) == (1, 1)
    assert lesion_matches([near_a], [a], 0.5) == (0, 1)
    assert lesion_matches([], [a, b], 0.1) == (0, 0)
    assert lesion_matches([a], [], 0.1) == (0, 1)


def test_aggregate_sensitivity_specificity_fp():
    records = [
        # tumor image, one of two lesions found, no false positive
        dict(gt_lesions=2, pred_lesions=1, found_lesions=1, false_positives=0,
             dice=0.5, iou=1 / 3, hd95=4.0),
        # tumor image, missed
        dict(gt_lesions=1, pred_lesions=0, found_lesions=0, false_positives=0,
             dice=0.0, iou=0.0, hd95=math.nan),
        # tumor-free image with a false positive
        dict(gt_lesions=0, pred_lesions=1, found_lesions=0, false_positives=1,
             dice=0.0, iou=0.0, hd95=math.nan),
        # tumor-free image, correctly empty
        dict(gt_lesions=0, pred_lesions=0, found_lesions=0, false_positives=0,
             dice=1.0, iou=1.0, hd95=math.nan),
    ]
    m = aggregate(records)
    assert m["dice"] == pytest.approx(0.25)
    assert m["dice_all"] == pytest.approx(1.5 / 4)
    assert m["sensitivity"] == pytest.approx(1 / 3)
    assert m["fp_per_image"] == pytest.approx(1 / 4)
    assert m["image_sensitivity"] == pytest.approx(0.5)
    assert m["image_specificity"] == pytest.approx(0.5)
    assert m["hd95"] == pytest.approx(4.0)


def test_evaluator_end_to_end_with_threshold_and_csv(tmp_path):
    gt = square(32, 4, 4, 8)
    poly = [4, 4, 12, 4, 12, 12, 4, 12]  # the same 8x8 square as a polygon (pixel corners)
    records = [
        {"image_id": 1, "file_name": "a.png", "height": 32, "width": 32,
         "pixel_spacing": [0.5, 0.5],
         "annotations": [{"segmentation": [poly], "iscrowd": 0, "category_id": 0}]},
        {"image_id": 2, "file_name": "b.png", "height": 32, "width": 32, "annotations": []},
    ]
    name = "test_eval_tmp"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    evaluator = TumorEvaluator(name, score_threshold=0.5, output_dir=str(tmp_path))
    evaluator.reset()

    def instances(masks, scores):
        inst = Instances((32, 32))
        inst.pred_masks = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, 32, 32,
                                                                                      dtype=bool)
        inst.scores = torch.tensor(scores, dtype=torch.float32)
        return inst

    low_fp = square(32, 20, 20, 5)
    evaluator.process([{"image_id": 1}, {"image_id": 2}],
                      [{"instances": instances([gt], [0.9])},
                       {"instances": instances([low_fp], [0.3])}])  # below threshold: ignored
    result = evaluator.evaluate()["tumor"]
    assert result["dice"] == pytest.approx(1.0)
    assert result["sensitivity"] == 1.0 and result["fp_per_image"] == 0.0
    assert result["image_specificity"] == 1.0
    assert result["hd95"] == 0.0
    csv_text = (tmp_path / "tumor_metrics_per_image.csv").read_text()
    assert csv_text.splitlines()[0].startswith("file_name,image_id")
    assert "a.png" in csv_text and ",mm," in csv_text
    DatasetCatalog.remove(name)
