"""The tumor evaluator's metrics against hand-computed cases."""

from __future__ import annotations

import math

import tumor_det  # noqa: F401
from tumor_det.evaluation.evaluator import (
    TumorEvaluator,
    aggregate,
    lesion_iou,
    lesion_matches,
    region_metrics,
)

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


# Regression cases for the switch to library metrics (MONAI for Dice/IoU/HD95, pycocotools for
# the lesion IoU): the expected numbers are what the previous, hand-written implementation gave.
SIZE = 64


def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def random_blob(seed: int) -> np.ndarray:
    """Union of 3 random ellipses near the image centre (integer parameters from ``seed``)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((SIZE, SIZE), bool)
    for cy, cx, ry, rx in rng.integers([20, 20, 3, 3], [44, 44, 12, 12], size=(3, 4)):
        mask |= ellipse(cy, cx, ry, rx)
    return mask


def touching() -> tuple[np.ndarray, np.ndarray]:
    """Two 10x10 lesions side by side, sharing an edge."""
    a, b = square(SIZE, 20, 10, 10), square(SIZE, 20, 20, 10)
    return a, b


def test_blobs_are_the_recorded_ones():
    # (pixels of the masks the numbers below were recorded on)
    assert [int(random_blob(s).sum()) for s in range(1, 7)] == [591, 324, 399, 318, 277, 355]


EMPTY = np.zeros((SIZE, SIZE), bool)
MM = (0.5, 0.8)
# today's implementation gave: (pred, gt) -> dice, iou, hd95 in px, hd95 with MM spacing
REGION_CASES = {
    "blobs 1/2": (lambda: (random_blob(1), random_blob(2)),
                  0.5464481115341187, 0.37593984603881836, 14.401328086853027, 10.602357864379883),
    "blobs 3/4": (lambda: (random_blob(3), random_blob(4)),
                  0.23152022063732147, 0.1309148222208023, 17.49135971069336, 9.889634132385254),
    "blobs 5/6": (lambda: (random_blob(5), random_blob(6)),
                  0.4810126721858978, 0.3166666626930237, 7.0, 4.701640605926514),
    "empty pred": (lambda: (EMPTY, random_blob(2)), 0.0, 0.0, math.nan, math.nan),
    "empty gt": (lambda: (random_blob(1), EMPTY), 0.0, 0.0, math.nan, math.nan),
    "both empty": (lambda: (EMPTY, EMPTY), 1.0, 1.0, math.nan, math.nan),
    "touching, merged and shifted": (
        lambda: (touching()[0] | touching()[1], np.roll(touching()[0] | touching()[1], 1, 1)),
        0.949999988079071, 0.9047619104385376, 1.0, 0.800000011920929),
}


@pytest.mark.parametrize("case", REGION_CASES)
def test_region_metrics_match_the_previous_implementation(case):
    make, dice, iou, hd_px, hd_mm = REGION_CASES[case]
    pred, gt = make()
    for spacing, hd95 in ((None, hd_px), (MM, hd_mm)):
        m = region_metrics(pred, gt, spacing)
        assert m["dice"] == pytest.approx(dice, abs=1e-6)
        assert m["iou"] == pytest.approx(iou, abs=1e-6)
        assert m["hd95"] == pytest.approx(hd95, abs=1e-6, nan_ok=True)


def test_lesion_iou_and_matches_match_the_previous_implementation():
    far = square(SIZE, 0, 56, 6)
    preds = [random_blob(1), random_blob(3), random_blob(5), far]
    gts = [random_blob(2), random_blob(4), random_blob(6)]
    # today's implementation gave
    np.testing.assert_allclose(lesion_iou(preds, gts), [
        [0.37593984603881836, 0.17898832261562347, 0.25965380668640137],
        [0.30741411447525024, 0.1309148222208023, 0.19872814416885376],
        [0.33259424567222595, 0.2850971817970276, 0.3166666626930237],
        [0.0, 0.0, 0.0]], rtol=0, atol=1e-6)
    expected = {0.1: (3, 1), 0.2: (3, 1), 0.3: (2, 1), 0.4: (0, 4), 0.5: (0, 4)}
    assert {t: lesion_matches(preds, gts, t) for t in expected} == expected

    a, b = touching()
    np.testing.assert_allclose(lesion_iou([a | b, EMPTY], [a, b]), [[0.5, 0.5], [0.0, 0.0]],
                               rtol=0, atol=1e-6)
    assert lesion_matches([a | b], [a, b], 0.5) == (2, 0)
    assert lesion_matches([a | b, EMPTY], [a, b], 0.5) == (2, 1)
    assert lesion_matches([a | b], [a, b], 0.51) == (0, 1)
    assert lesion_matches([a | b, EMPTY], [a, b], 0.51) == (0, 2)
    assert lesion_matches([EMPTY], [a], 0.0) == (1, 0)
    assert lesion_matches([EMPTY], [EMPTY], 0.0) == (1, 0)
    assert lesion_matches([a], [a], 1.0) == (1, 0)
    assert lesion_iou([], [a]).shape == (0, 1) and lesion_iou([a], []).shape == (1, 0)


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


def test_per_patient_aggregates_pool_each_patients_slices(tmp_path):
    # patient p1: two slices, 8x8 tumor on each; found exactly on one, half (the left 4 columns)
    # on the other -> pooled Dice 2*(64+32)/((64+32)+(64+64)) = 192/224; patient p2: one tumor
    # missed, one false positive elsewhere; patient p3: tumor-free, no prediction
    gt = square(32, 4, 4, 8)
    half = gt.copy()
    half[:, 8:] = False
    poly = [4, 4, 12, 4, 12, 12, 4, 12]
    ann = [{"segmentation": [poly], "iscrowd": 0, "category_id": 0}]
    records = [
        {"image_id": 1, "file_name": "a.png", "height": 32, "width": 32, "patient_id": "p1",
         "annotations": ann},
        {"image_id": 2, "file_name": "b.png", "height": 32, "width": 32, "patient_id": "p1",
         "annotations": ann},
        {"image_id": 3, "file_name": "c.png", "height": 32, "width": 32, "patient_id": "p2",
         "annotations": ann},
        {"image_id": 4, "file_name": "d.png", "height": 32, "width": 32, "patient_id": "p3",
         "annotations": []},
    ]
    name = "test_eval_patients_tmp"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    evaluator = TumorEvaluator(name, score_threshold=0.5, output_dir=str(tmp_path))
    evaluator.reset()

    def instances(masks):
        inst = Instances((32, 32))
        inst.pred_masks = (torch.from_numpy(np.stack(masks)) if masks
                           else torch.zeros(0, 32, 32, dtype=bool))
        inst.scores = torch.full((len(masks),), 0.9)
        return inst

    evaluator.process([{"image_id": i} for i in (1, 2, 3, 4)],
                      [{"instances": instances([gt])}, {"instances": instances([half])},
                       {"instances": instances([square(32, 20, 20, 6)])},
                       {"instances": instances([])}])
    result = evaluator.evaluate()["tumor"]
    assert result["patients"] == 3
    assert result["patient_dice"] == pytest.approx((192 / 224 + 0.0) / 2)  # tumor patients
    assert result["patient_sensitivity"] == pytest.approx(0.5)  # p1 2/2, p2 0/1
    assert result["patient_fp_per_slice"] == pytest.approx(1 / 4)
    rows = (tmp_path / "tumor_metrics_per_patient.csv").read_text().splitlines()
    assert rows[0].startswith("patient_id,slices") and len(rows) == 4
    DatasetCatalog.remove(name)
