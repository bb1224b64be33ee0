"""3D lesions: linking slice detections, the rules that drop lesions, per-lesion numbers.

Detections are drawn by hand in display slices; expected label maps, volumes and centroids are
derived independently (``from_display_slices`` of the drawn masks, the affine by hand).
"""

from __future__ import annotations

from tumor_det.config.config import get_tumor_cfg
from tumor_det.evaluation.threshold import with_score_threshold
from tumor_det.inference.lesions import (
    SINGLE_SLICE_MIN_SCORE,
    Detections,
    LesionRules,
    find_lesions,
)
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io.geometry import Volume, display_slices, from_display_slices

import numpy as np
import pytest
from test_predictor import FAST, bright_instances

SHAPE = (20, 16, 10)  # input grid (x, y, z); display slices are (10, 16, 20)
AFFINE = np.array([[1.0, 0, 0, -10], [0, 1.0, 0, -8], [0, 0, 2.0, 4], [0, 0, 0, 1]])


def detections(*items: tuple[int, float, int, tuple[slice, slice]]) -> list[Detections]:
    """(slice, score, class, (rows, cols)) boxes -> per display slice detections."""
    k_count, rows, cols = SHAPE[2], SHAPE[1], SHAPE[0]
    per: list[list] = [[] for _ in range(k_count)]
    for k, score, cls, (r, c) in items:
        mask = np.zeros((rows, cols), bool)
        mask[r, c] = True
        per[k].append((score, cls, mask))
    return [Detections(np.array([s for s, _, _ in d], float), np.array([c for _, c, _ in d], int),
                       np.array([m for _, _, m in d], bool).reshape(-1, rows, cols))
            for d in per]


def drawn(dets: list[Detections], keep=lambda k, i: True) -> np.ndarray:
    return np.stack([np.any([m for i, m in enumerate(d.masks) if keep(k, i)] or
                            [np.zeros(SHAPE[1::-1], bool)], axis=0)
                     for k, d in enumerate(dets)])


@pytest.fixture
def volume() -> Volume:
    return Volume(np.zeros(SHAPE, np.float32), AFFINE)


CUBE = [(k, 0.6, 0, (slice(2, 6), slice(3, 8))) for k in range(2, 6)]
WEAK_LONE = (8, 0.4, 1, (slice(10, 13), slice(12, 15)))
STRONG_LONE = (0, 0.95, 1, (slice(12, 14), slice(1, 3)))


def test_lesions_are_linked_numbered_and_described(volume):
    dets = detections(*CUBE, WEAK_LONE, STRONG_LONE)
    result = find_lesions(dets, volume, rules=LesionRules(single_slice_min_score=0.0))
    assert [les.id for les in result.lesions] == [1, 2, 3]
    assert [les.score for les in result.lesions] == [0.95, 0.6, 0.4]  # ids by score
    strong, cube, weak = result.lesions
    assert (cube.slices, cube.voxels, cube.class_index) == ((2, 5), 4 * 4 * 5, 0)
    assert cube.volume_ml == pytest.approx(80 * 2.0 / 1000)  # 1 x 1 x 2 mm voxels
    assert (strong.slices, strong.class_index, weak.class_index) == ((0, 0), 1, 1)
    # the label maps in both frames agree with the drawn masks
    disp = drawn(dets)
    np.testing.assert_array_equal(result.display_labels > 0, disp)
    np.testing.assert_array_equal(result.labels, from_display_slices(result.display_labels,
                                                                     volume))
    for lesion in result.lesions:
        voxels = np.argwhere(result.labels == lesion.id)
        assert len(voxels) == lesion.voxels
        centre = AFFINE[:3, :3] @ voxels.mean(axis=0) + AFFINE[:3, 3]
        np.testing.assert_allclose(lesion.centroid_mm, centre, atol=0.01)
    # the class map holds dataset category ids (default: class index + 1)
    np.testing.assert_array_equal(np.unique(result.class_map()), [0, 1, 2])
    classes = result.class_map({0: 7, 1: 9})
    assert set(classes[result.labels == cube.id]) == {7}
    assert set(classes[result.labels == weak.id]) == {9}


def test_the_centroid_is_in_ras_millimetres(volume):
    # one voxel at display slice 3, row 0, column 0: the most anterior voxel (y = 15) on the
    # patient's right (x = 19: RAS+ x grows to the right; radiological view: right on the left)
    dets = detections((3, 0.9, 0, (slice(0, 1), slice(0, 1))))
    (lesion,) = find_lesions(dets, volume, rules=LesionRules(0, 0)).lesions
    assert lesion.centroid_mm == pytest.approx((19 - 10, 15 - 8, 3 * 2 + 4))


def test_single_slice_rule_and_minimum_volume(volume):
    dets = detections(*CUBE, WEAK_LONE, STRONG_LONE)
    assert WEAK_LONE[1] < SINGLE_SLICE_MIN_SCORE < STRONG_LONE[1]
    result = find_lesions(dets, volume)  # default rules
    assert [les.score for les in result.lesions] == [0.95, 0.6]
    (dropped,) = result.dropped
    assert dropped.id == 0 and dropped.score == 0.4 and "one slice" in dropped.dropped
    expected = drawn(dets, lambda k, i: k != WEAK_LONE[0])
    np.testing.assert_array_equal(result.display_labels > 0, expected)
    np.testing.assert_array_equal(result.labels > 0, from_display_slices(expected, volume))
    # 4 voxels x 2 mm3 = 0.008 mL for the strong lone one: below 0.01 mL, dropped
    result = find_lesions(dets, volume, rules=LesionRules(min_volume_ml=0.01))
    assert [les.score for les in result.lesions] == [0.6]
    assert sorted(les.score for les in result.dropped) == [0.4, 0.95]


def test_one_slice_volumes_keep_their_lesions():
    flat = Volume(np.zeros((20, 16, 1), np.float32), AFFINE)
    dets = [Detections(np.array([0.3]), np.array([0]), np.ones((1, 16, 20), bool))]
    assert len(find_lesions(dets, flat).lesions) == 1


def test_diagonal_neighbours_and_overlapping_detections_are_one_lesion(volume):
    dets = detections(
        (4, 0.4, 0, (slice(5, 7), slice(5, 7))),
        (4, 0.8, 1, (slice(6, 9), slice(6, 9))),  # overlaps the first, same slice
        (5, 0.5, 0, (slice(9, 10), slice(9, 10))),  # touches the corner (26-connected)
    )
    (lesion,) = find_lesions(dets, volume).lesions
    assert (lesion.score, lesion.class_index, lesion.slices) == (0.8, 1, (4, 5))
    assert lesion.voxels == 4 + 9 - 1 + 1


def test_empty_volume(volume):
    result = find_lesions(detections(), volume)
    assert result.lesions == [] and not result.labels.any()
    assert result.labels.shape == SHAPE


@pytest.fixture(scope="module")
def predictor() -> TumorPredictor:
    return TumorPredictor(with_score_threshold(get_tumor_cfg(None, FAST), 0.3),
                          PredictorOptions(allow_untrained=True))


def test_volume_prediction_drops_the_lesions_the_rules_drop(predictor, monkeypatch):
    weak = SINGLE_SLICE_MIN_SCORE - 0.1
    monkeypatch.setattr(predictor, "run_model", lambda images: bright_instances(images, weak))
    data = np.zeros((12, 16, 9), np.float32)
    data[3:7, 5:12, 2:6] = 1000.0
    data[9, 1, 7] = 1000.0  # a one-slice "tumor" below SINGLE_SLICE_MIN_SCORE
    volume = Volume(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    result = predictor.predict_volume(volume, batch_size=4)
    cube = np.zeros_like(data, bool)
    cube[3:7, 5:12, 2:6] = True
    np.testing.assert_array_equal(result.mask, cube)
    np.testing.assert_array_equal(result.labels, cube.astype(np.int32))
    assert result.num_tumors == 1 and result.tumor_scores == [pytest.approx(weak)]
    assert len(result.lesion_map.dropped) == 1
    # the slices (video, results.json) lose the dropped detection too
    shown, _ = display_slices(Volume(cube, volume.affine))
    for k, sl in enumerate(result.slices):
        np.testing.assert_array_equal(sl.mask, shown[k])
        assert sl.num_tumors == int(shown[k].any())
        if sl.num_tumors:
            np.testing.assert_array_equal(sl.instances.pred_masks.any(0).numpy(), sl.mask)
    kept = predictor.predict_volume(volume, batch_size=4, rules=LesionRules(0.0, 0.0))
    np.testing.assert_array_equal(kept.mask, data > 0)
    assert kept.num_tumors == 2 and kept.lesion_map.dropped == []
