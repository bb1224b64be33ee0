"""TumorPredictor: intensity rule, batching, thresholds, areas and volume geometry.

Pixel-exact checks replace the model's forward pass (``run_model``) with a fake that segments
the bright pixels of what it is given, so every mapping (intensity, orientation, areas) is
checked against known answers; the real randomly initialised model checks the plumbing.
"""

from __future__ import annotations

from pathlib import Path

from tumor_det.checkpoint.weights import resolve_weights
from tumor_det.config.config import get_tumor_cfg
from tumor_det.evaluation.threshold import with_score_threshold
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io import load_dicom_series, load_nifti
from tumor_det.io.geometry import LPS_TO_RAS, Volume, display_slices, from_display_slices
from tumor_det.io.intensity import to_model_input

import nibabel as nib
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from test_splash import make_dicom_series

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
FAST = ["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]


def bright_instances(images: list[np.ndarray], score: float = 0.9) -> list[Instances]:
    """Fake model output: one instance per image, the pixels brighter than 127."""
    out = []
    for image in images:
        mask = torch.from_numpy(image[:, :, 0] > 127)
        inst = Instances(image.shape[:2])
        if mask.any():
            ys, xs = torch.nonzero(mask, as_tuple=True)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            inst.pred_boxes = Boxes(torch.tensor([box], dtype=torch.float32))
            inst.scores = torch.tensor([score])
            inst.pred_classes = torch.tensor([0])
            inst.pred_masks = mask[None]
        else:
            inst.pred_boxes = Boxes(torch.zeros(0, 4))
            inst.scores = torch.zeros(0)
            inst.pred_classes = torch.zeros(0, dtype=torch.long)
            inst.pred_masks = torch.zeros(0, *image.shape[:2], dtype=torch.bool)
        out.append(inst)
    return out


@pytest.fixture(scope="module")
def predictor() -> TumorPredictor:
    torch.manual_seed(0)
    return TumorPredictor(with_score_threshold(get_tumor_cfg(None, FAST), 0.5),
                          PredictorOptions(allow_untrained=True))


@pytest.fixture
def fake(predictor, monkeypatch) -> TumorPredictor:
    monkeypatch.setattr(predictor, "run_model", bright_instances)
    return predictor


def test_sixteen_bit_grey_uses_the_training_intensity_rule(fake):
    image = np.full((40, 50), 1000, np.uint16)
    image[10:20, 5:25] = 40000
    pred = fake(image, pixel_spacing=(0.5, 0.25))
    np.testing.assert_array_equal(pred.image, to_model_input(image))
    assert pred.image.shape == (40, 50, 3) and pred.image.dtype == np.uint8
    expected = np.zeros((40, 50), bool)
    expected[10:20, 5:25] = True
    np.testing.assert_array_equal(pred.mask, expected)
    assert pred.num_tumors == 1 and pred.scores == [pytest.approx(0.9)]
    assert pred.areas_px == [200] and pred.area_px == 200
    assert pred.area_mm2 == pytest.approx(200 * 0.5 * 0.25)
    assert fake(image).area_mm2 is None


def test_score_threshold_filters_instances(fake, monkeypatch):
    monkeypatch.setattr(fake, "run_model", lambda images: bright_instances(images, 0.3))
    image = np.zeros((16, 16), np.uint8)
    image[4:8, 4:8] = 255
    pred = fake(image)
    assert pred.num_tumors == 0 and not pred.mask.any() and len(pred.instances) == 0


def test_real_model_batches_with_one_load(predictor):
    torch.manual_seed(0)
    predictor.score_threshold = 0.0
    try:
        images = [np.random.randint(0, 4000, (48, 40), np.int16) for _ in range(3)]
        images.append(np.zeros((30, 30, 3), np.uint8))
        preds = predictor.predict_batch(images)
    finally:
        predictor.score_threshold = 0.5
    assert len(preds) == 4
    for image, pred in zip(images, preds, strict=True):
        assert pred.mask.shape == image.shape[:2] and pred.mask.dtype == bool
        assert pred.instances.image_size == image.shape[:2]
        assert len(pred.scores) == len(pred.instances) == len(pred.areas_px)
        if len(pred.instances):
            assert pred.instances.pred_masks.device.type == "cpu"
            np.testing.assert_array_equal(pred.mask, pred.instances.pred_masks.any(0).numpy())


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resolve_weights(str(tmp_path / "nope.pth"))
    assert resolve_weights("") == ""
    cfg = get_tumor_cfg(None, ["MODEL.WEIGHTS", str(tmp_path / "nope.pth")])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        TumorPredictor(cfg)


def cube_volume(affine: np.ndarray) -> Volume:
    data = np.zeros((12, 16, 9), np.float32)
    data[3:7, 5:12, 2:6] = 1000.0
    data[9, 1, 7] = 1000.0  # a second, one-voxel "tumor"
    return Volume(data, affine)


@pytest.mark.parametrize(("affine", "spacing"), [
    (np.diag([2.0, 2.0, 3.0, 1.0]), (2.0, 2.0)),  # RAS
    (np.diag([-1.0, 1.5, 2.0, 1.0]), (1.5, 1.0)),  # LAS, like anatomical.nii
    (np.array([[0, 0, -2.0, 5], [-1.0, 0, 0, 1], [0, 1.5, 0, 2], [0, 0, 0, 1]]), (1.0, 2.0)),
])
def test_volume_mask_lands_in_the_input_grid(fake, affine, spacing):
    volume = cube_volume(affine)
    display, display_spacing = display_slices(volume)
    assert display_spacing == pytest.approx(spacing)  # (row, column) mm of the axial slices
    back = from_display_slices(display, volume)
    np.testing.assert_array_equal(back, volume.data)  # exact round trip
    result = fake.predict_volume(volume, batch_size=4)
    np.testing.assert_array_equal(result.mask, volume.data > 0)
    assert result.mask.shape == volume.data.shape
    voxel_mm3 = abs(np.linalg.det(affine[:3, :3]))
    assert result.voxel_volume_mm3 == pytest.approx(voxel_mm3)
    assert result.voxels == 4 * 7 * 4 + 1
    assert result.volume_ml == pytest.approx(result.voxels * voxel_mm3 / 1000)
    assert result.num_tumors == 2 and result.tumor_scores == [pytest.approx(0.9)] * 2
    assert len(result.slices) == display.shape[0]
    expected, _ = display_slices(Volume(volume.data > 0, affine))
    hits = [k for k, p in enumerate(result.slices) if p.mask.any()]
    assert hits == list(np.flatnonzero(expected.any(axis=(1, 2))))
    first, last = result.slice_range
    assert (first, last) == (hits[0], hits[-1])
    assert result.slices[first].area_mm2 == pytest.approx(
        result.slices[first].area_px * spacing[0] * spacing[1])


def test_display_slices_are_radiological_axial_views():
    data = np.zeros((4, 5, 3))
    data[0, 4, 1] = 1  # RAS+: x = 0 is the patient's left-most voxel, y = 4 the most anterior
    display, _ = display_slices(Volume(data, np.eye(4)))
    assert display.shape == (3, 5, 4)  # (slices inferior -> superior, rows, columns)
    # anterior at the top; the patient's left on the image's right (radiological convention)
    assert display[1, 0, 3] == 1 and display.sum() == 1


def test_anatomical_nifti_volume(fake):
    if not ANATOMICAL.is_file():
        pytest.skip("nibabel's anatomical.nii not installed")
    volume = load_nifti(ANATOMICAL)
    img = nib.load(str(ANATOMICAL))
    assert volume.data.shape == img.shape and np.allclose(volume.affine, img.affine)
    result = fake.predict_volume(volume, batch_size=8)
    assert result.mask.shape == img.shape
    assert result.volume_ml == pytest.approx(result.mask.sum() * 8.0 / 1000)


def test_dicom_series_affine_and_slice_order(tmp_path):
    zs = make_dicom_series(tmp_path / "s", n=4)
    files = sorted((tmp_path / "s").iterdir())
    volume = load_dicom_series(files)
    assert volume.data.shape == (64, 64, 4)  # (columns, rows, slices)
    expected_lps = np.array([
        [0.3125, 0, 0, -83.9063],
        [0, 0.3125, 0, -91.2],
        [0, 0, 2.5, zs[0]],
        [0, 0, 0, 1],
    ])
    np.testing.assert_allclose(volume.affine, LPS_TO_RAS @ expected_lps, atol=1e-4)
    assert nib.aff2axcodes(volume.affine) == ("L", "P", "S")
    # slices ordered by position (instance numbers were reversed): all equal here, so check
    # the first voxel row of each slice against the source pixels
    import pydicom

    pixels = pydicom.dcmread(files[0]).pixel_array
    np.testing.assert_array_equal(volume.data[:, :, 0], pixels.T)
    assert volume.voxel_volume_mm3 == pytest.approx(0.3125 * 0.3125 * 2.5)


def test_predictor_refuses_an_untrained_model():
    from tumor_det.inference.predictor import UntrainedModelError

    with pytest.raises(UntrainedModelError, match="no model weights.*allow-untrained"):
        TumorPredictor(get_tumor_cfg(None, FAST))


def old_path(predictor: TumorPredictor, images: list[np.ndarray]) -> list[Instances]:
    """What run_model did before post-processing moved out of the model: ``model(inputs)``."""
    inputs = predictor.model_inputs(images)
    with torch.inference_mode():
        return [out["instances"].to("cpu") for out in predictor.model(inputs)]


@pytest.mark.parametrize("merge", [False, True])
def test_postprocessing_keeps_the_models_own_masks(merge):
    torch.manual_seed(0)
    cfg = get_tumor_cfg(None, [*FAST, "TUMOR.MERGE.ENABLED", str(merge)])
    assert cfg.MODEL.META_ARCHITECTURE == "TumorRCNN"  # model(inputs) merges when told to
    predictor = TumorPredictor(with_score_threshold(cfg, 0.0),
                               PredictorOptions(allow_untrained=True))
    images = [np.random.randint(0, 256, (48, 40, 3), np.uint8) for _ in range(2)]
    new = predictor.run_model(images)
    inputs = predictor.model_inputs(images)
    with_probs = predictor.postprocess(predictor.raw_outputs(inputs), inputs, probabilities=True)
    total = 0
    for a, b, p in zip(new, old_path(predictor, images), with_probs, strict=True):
        total += len(a)
        assert len(a) == len(b)
        torch.testing.assert_close(a.scores, b.scores)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.equal(a.pred_masks, b.pred_masks)  # pixel for pixel
        # the probabilities (0-255, truncated) agree with the 0.5 threshold of the masks
        assert torch.equal(p.pred_masks, a.pred_masks) and p.mask_probs.dtype == torch.uint8
        assert (p.mask_probs >= 128)[~a.pred_masks].sum() == 0
        assert (p.mask_probs[a.pred_masks] >= 127).all()
    assert total > 0  # random weights, threshold 0: detections to compare
