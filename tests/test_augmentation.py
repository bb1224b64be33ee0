"""Training augmentation: the same draw moves image, masks and polygons together; Copy-Paste
pastes the source's tumor pixels and its exact outline; the mapper trains."""

from __future__ import annotations

from tumor_det.config.config import get_tumor_cfg
from tumor_det.data.augmentation import (
    ElasticTransform,
    RandomBiasField,
    RandomElastic,
    RandomGamma,
    RandomNoise,
    TumorDatasetMapper,
    build_train_augmentation,
    copy_paste,
)

import numpy as np
import pytest
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, polygons_to_bitmask


def disc(cx: float, cy: float, r: float, n: int = 48) -> list[float]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).ravel().tolist()


def head_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """A bright ellipse ("head") on a black background, 3 equal channels, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    head = ((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.35 * size)) ** 2 < 1
    gray = np.where(head, rng.integers(80, 120, (size, size)), 0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_elastic_moves_polygons_with_the_image():
    np.random.seed(0)
    size = 128
    poly = disc(64, 60, 20)
    mask = polygons_to_bitmask([poly], size, size).astype(np.uint8)
    tf = RandomElastic(1.0, alpha=8.0, sigma=10.0).get_transform(np.zeros((size, size, 3)))
    assert isinstance(tf, ElasticTransform)
    assert np.abs(tf.dx).max() == pytest.approx(8.0, rel=1e-4)
    warped_mask = tf.apply_segmentation(mask).astype(bool)
    warped_poly = tf.apply_polygons([np.asarray(poly).reshape(-1, 2)])[0].ravel().tolist()
    from_poly = polygons_to_bitmask([warped_poly], size, size)
    assert not np.array_equal(warped_mask, mask.astype(bool))  # it moved
    assert iou(warped_mask, from_poly) > 0.9  # and the outline moved with it
    # probability 0: nothing happens
    assert isinstance(RandomElastic(0.0, 8.0, 10.0).get_transform(np.zeros((8, 8, 3))),
                      T.NoOpTransform)


@pytest.mark.parametrize("aug", [RandomGamma(0.5, 2.0), RandomBiasField(0.3),
                                 RandomNoise(0.1)])
def test_intensity_changes_pixels_not_geometry(aug):
    np.random.seed(1)
    image = head_image()
    tf = aug.get_transform(image)
    out = tf.apply_image(image)
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 255
    assert np.abs(out - image.astype(np.float32)).mean() > 0.1
    coords = np.array([[3.0, 4.0], [100.0, 7.5]])
    np.testing.assert_array_equal(tf.apply_coords(coords.copy()), coords)
    # air stays black under gamma and bias field (multiplicative), not under noise
    if not isinstance(aug, RandomNoise):
        assert out[0, 0].max() == 0


def test_bias_field_is_smooth_and_bounded():
    np.random.seed(2)
    image = np.full((64, 64, 3), 100, np.uint8)
    out = RandomBiasField(0.2, degree=3).get_transform(image).apply_image(image)[..., 0]
    # 10 coefficients of at most 0.2 on [-1, 1]^2: |log field| <= 2
    assert np.all(out >= 100 * np.exp(-2.0) - 1e-3) and np.all(out <= 100 * np.exp(2.0))
    assert np.abs(np.diff(out, axis=0)).max() < 5  # neighbouring pixels: smooth


def test_copy_paste_pastes_source_pixels_and_exact_outline():
    size = 128
    target = head_image(size, seed=3)
    source = head_image(size, seed=4)
    source[polygons_to_bitmask([disc(40, 64, 12)], size, size)] = 250
    source_annos = [{"segmentation": [disc(40, 64, 12)], "category_id": 0, "iscrowd": 0,
                     "bbox": [28, 52, 24, 24], "bbox_mode": BoxMode.XYWH_ABS}]
    target_annos = [{"segmentation": [disc(64, 64, 25)], "category_id": 0, "iscrowd": 0,
                     "bbox": [39, 39, 50, 50], "bbox_mode": BoxMode.XYWH_ABS}]
    before = polygons_to_bitmask(target_annos[0]["segmentation"], size, size)
    out, annos = copy_paste(target, target_annos, source, source_annos, scale=(1.0, 1.0),
                            rng=np.random.default_rng(0))
    pasted = out[..., 0] == 250
    assert pasted.sum() > 300  # about pi 12^2 = 452 pixels
    masks = [polygons_to_bitmask(a["segmentation"], size, size) for a in annos]
    # the pasted tumor's outline is exactly its pixels; it is inside the head
    assert any(np.array_equal(m, pasted) for m in masks)
    assert (head_image(size, seed=3)[..., 0][pasted] > 0).mean() > 0.5
    # the target's tumor lost exactly what the paste covers
    if (before & pasted).any():
        rest = np.any([m for m in masks if not np.array_equal(m, pasted)], axis=0)
        np.testing.assert_array_equal(rest, before & ~pasted)
    else:
        assert len(annos) == 2
    # boxes are tight, in XYXY
    for anno, mask in zip(annos, masks, strict=True):
        rows, cols = np.nonzero(mask)
        if anno["bbox_mode"] == BoxMode.XYXY_ABS:
            assert anno["bbox"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    # pixels outside the paste are unchanged
    np.testing.assert_array_equal(out[~pasted], target[~pasted])


def test_copy_paste_without_source_tumors_changes_nothing():
    image = head_image(64)
    out, annos = copy_paste(image, [], head_image(64, 1), [])
    assert out is image and annos == []


def test_lsj_gives_fixed_size_inputs():
    cfg = get_tumor_cfg("quick_cpu.yaml", ["TUMOR.AUGMENT.LSJ.ENABLED", "True",
                                           "TUMOR.AUGMENT.LSJ.SIZE", "96"])
    augs = T.AugmentationList(build_train_augmentation(cfg))
    np.random.seed(3)
    for _ in range(5):
        inp = T.AugInput(head_image(128))
        augs(inp)
        assert inp.image.shape[:2] == (96, 96)


def test_mapper_copy_paste_gives_two_tumors_with_tight_boxes(tmp_path):
    import cv2

    size = 128
    files = []
    for i, (cx, cy) in enumerate([(40, 40), (90, 90)]):
        image = head_image(size, seed=i)
        image[polygons_to_bitmask([disc(cx, cy, 10)], size, size)] = 240
        path = tmp_path / f"slice{i}.png"
        cv2.imwrite(str(path), image)
        files.append({"file_name": str(path), "height": size, "width": size, "image_id": i,
                      "annotations": [{"segmentation": [disc(cx, cy, 10)], "category_id": 0,
                                       "iscrowd": 0, "bbox": [cx - 10, cy - 10, 20, 20],
                                       "bbox_mode": BoxMode.XYWH_ABS}]})
    cfg = get_tumor_cfg("quick_cpu.yaml", [
        "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.RANDOM_FLIP", "none",
        "TUMOR.AUGMENT.ROTATION", "0.0", "TUMOR.AUGMENT.BRIGHTNESS", "(1.0, 1.0)",
        "TUMOR.AUGMENT.CONTRAST", "(1.0, 1.0)", "TUMOR.AUGMENT.COPY_PASTE.PROB", "1.0",
        "TUMOR.AUGMENT.COPY_PASTE.SCALE", "(1.0, 1.0)"])
    mapper = TumorDatasetMapper(cfg, build_train_augmentation(cfg), sources=files[1:])
    np.random.seed(0)
    seen = []
    for _ in range(4):
        out = mapper(files[0])
        inst = out["instances"]
        assert out["image"].shape == (3, size, size)
        boxes = inst.gt_boxes.tensor.numpy()
        tight = inst.gt_masks.get_bounding_boxes().tensor.numpy()
        np.testing.assert_allclose(boxes, tight)
        seen.append(len(inst))
    assert max(seen) == 2  # the slice's tumor and the pasted one (unless the paste covers it)
    assert files[0]["annotations"][0]["bbox_mode"] == BoxMode.XYWH_ABS  # input untouched


@pytest.mark.slow
def test_training_with_every_augmentation_lowers_the_loss(tmp_path):
    """A few iterations with every augmentation on: the loader works and the loss falls."""
    import json

    from toy_data import toy_opts, train_net_in_process, write_toy_dataset

    write_toy_dataset(tmp_path, size=96)
    opts = toy_opts(tmp_path, tmp_path / "out", max_iter=40) + [
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "SOLVER.BASE_LR", "0.01",
        "TUMOR.AUGMENT.COPY_PASTE.PROB", "0.5", "TUMOR.AUGMENT.ELASTIC.PROB", "0.5",
        "TUMOR.AUGMENT.LSJ.ENABLED", "True", "TUMOR.AUGMENT.LSJ.SIZE", "96",
        "TUMOR.AUGMENT.GAMMA", "(0.7, 1.5)", "TUMOR.AUGMENT.BIAS_FIELD", "0.2",
        "TUMOR.AUGMENT.NOISE_STD", "0.03", "SOLVER.CHECKPOINT_PERIOD", "100"]
    train_net_in_process(["--config-file", "quick_cpu.yaml", *opts])
    losses = [json.loads(line)["total_loss"]
              for line in (tmp_path / "out" / "metrics.json").read_text().splitlines()
              if "total_loss" in line]
    assert len(losses) == 2 and all(np.isfinite(losses))  # medians of iterations 0-19, 20-39
    assert losses[-1] < 0.9 * losses[0]
