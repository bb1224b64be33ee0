"""Test-time augmentation in inference: ``TumorPredictor(tta=True)`` and ``splash.py --tta``.

A random model (``MODEL.WEIGHTS ""``) on tiny images with two TTA sizes and flips (4 copies):
the checks are about which copies the model sees, the frame and kind of the results, the
equivalence with the plain path, and the command line.
"""

from __future__ import annotations

import csv
import json

import tumor_det.inference.predictor as predictor_module
from tumor_det.cli import splash as splash_cli
from tumor_det.cli.splash import main
from tumor_det.config.config import get_tumor_cfg
from tumor_det.inference.backends import ExportError
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io.geometry import Volume
from tumor_det.modeling.meta_arch import TumorRCNNWithTTA, with_tta

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import GeneralizedRCNNWithTTA

FAST = ["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]
#: two sizes, each also flipped: 4 copies per image
AUG = ["TEST.AUG.MIN_SIZES", "(48, 64)", "TEST.AUG.MAX_SIZE", "128", "TEST.AUG.FLIP", "True"]


def image(h: int = 50, w: int = 70, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 60, (h, w), dtype=np.uint8)
    cv2.circle(out, (w // 3, h // 2), min(h, w) // 5, 220, -1)
    return out


def predictor(opts: list[str], seed: int = 0, weights=None, **kw) -> TumorPredictor:
    torch.manual_seed(seed)  # the same random weights for the same seed
    cfg = get_tumor_cfg(None, [*FAST, *opts, "TUMOR.EVAL.SCORE_THRESHOLD", "0.0"])
    options = PredictorOptions(allow_untrained=True, **kw)
    if weights:
        return TumorPredictor.ensemble(cfg, weights, options)
    return TumorPredictor(cfg, options)


def record_inference(model, monkeypatch) -> list[list[tuple[int, ...]]]:
    """Patch ``model.inference`` to record the image shapes of each call."""
    calls: list[list[tuple[int, ...]]] = []
    inference = model.inference

    def counting(batched_inputs, *args, **kwargs):
        calls.append([tuple(x["image"].shape) for x in batched_inputs])
        return inference(batched_inputs, *args, **kwargs)

    monkeypatch.setattr(model, "inference", counting)
    return calls


def test_tta_runs_each_augmented_copy_and_answers_in_the_image_frame(monkeypatch):
    pred = predictor(AUG, tta=True, probabilities=True)
    assert isinstance(pred._tta[id(pred.model)], TumorRCNNWithTTA)
    calls = record_inference(pred.model, monkeypatch)
    out = pred.predict_batch([image(50, 70)], pixel_spacing=(0.5, 0.5))[0]
    # one pass for the boxes, one for the masks of the merged boxes: 4 copies each, at the
    # TEST.AUG sizes (short edge 48 and 64 of a 50 x 70 image), each size twice (flip)
    assert len(calls) == 2
    for shapes in calls:
        assert sorted(shapes) == [(3, 48, 67)] * 2 + [(3, 64, 90)] * 2
    inst = out.instances
    assert inst.image_size == (50, 70) and len(inst) > 0  # random weights, threshold 0
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape[1:] == (50, 70)
    assert out.mask.shape == (50, 70) and out.probability.shape == (50, 70)
    assert out.area_mm2 == pytest.approx(out.area_px * 0.25)
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 2] <= 70).all() and (boxes[:, 3] <= 50).all()
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}


def test_tta_with_one_plain_copy_is_the_plain_prediction():
    """TEST.AUG = the test size, no flip: TTA gives the plain path's answer (same threshold,
    masks, merge), so both paths post-process the same kind of instances."""
    opts = ["TEST.AUG.MIN_SIZES", "(64,)", "TEST.AUG.MAX_SIZE", "128", "TEST.AUG.FLIP", "False"]
    a = predictor(opts, probabilities=True)(image(64, 80))
    b = predictor(opts, tta=True, probabilities=True)(image(64, 80))
    assert len(a.instances) > 0 and len(a.instances) == len(b.instances)
    torch.testing.assert_close(a.instances.scores, b.instances.scores)
    torch.testing.assert_close(a.instances.pred_boxes.tensor, b.instances.pred_boxes.tensor,
                               atol=1e-3, rtol=0)
    assert torch.equal(a.instances.pred_classes, b.instances.pred_classes)
    differ = (a.instances.pred_masks != b.instances.pred_masks).sum()
    assert differ <= 0.001 * a.instances.pred_masks.numel()
    assert np.abs(a.probability.astype(int) - b.probability).max() <= 1
    assert a.scores == pytest.approx(b.scores, abs=1e-5) and a.mask.shape == b.mask.shape


def test_evaluation_tta_is_detectron2s_then_the_merge():
    """Splitting ``raw_inference`` out of ``_inference_one_image`` leaves evaluation's TTA
    (``TumorTrainer.test_with_TTA``) as it was: Detectron2's, then the merge."""
    pred = predictor(AUG)
    tta = with_tta(pred.cfg, pred.model, batch_size=4)
    image_chw = torch.as_tensor(np.ascontiguousarray(pred.prepare(image()).transpose(2, 0, 1)))
    inp = {"image": image_chw, "height": 50, "width": 70}
    with torch.inference_mode():
        (ours,) = tta([inp])
        (theirs,) = tta.merge([GeneralizedRCNNWithTTA._inference_one_image(tta, inp)])
    a, b = ours["instances"], theirs["instances"]
    assert len(a) > 0 and a.image_size == b.image_size == (50, 70)
    for name in ("scores", "pred_classes", "pred_masks"):
        assert torch.equal(a.get(name), b.get(name))
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)


def count_tta(monkeypatch) -> list[tuple[int, int]]:
    """Patch :meth:`TumorRCNNWithTTA.raw_inference` to record each image's (height, width)."""
    calls: list[tuple[int, int]] = []
    raw_inference = TumorRCNNWithTTA.raw_inference

    def counting(self, input):
        calls.append((input["height"], input["width"]))
        return raw_inference(self, input)

    monkeypatch.setattr(TumorRCNNWithTTA, "raw_inference", counting)
    return calls


def test_volume_slices_run_through_tta(monkeypatch):
    """Each run slice of a volume goes through TTA; the masks come back in its grid."""
    calls = count_tta(monkeypatch)
    voxels = np.zeros((40, 48, 2), np.int16)  # two axial slices, the second without anatomy
    voxels[..., 0] = image(40, 48)
    vol = predictor(AUG, tta=True, skip_empty=True).predict_volume(
        Volume(voxels, np.diag([0.5, 0.5, 2.0, 1.0])), batch_size=2)
    assert len(vol.slices) == 2 and len(calls) == 1  # the empty slice is not run
    assert calls[0] == vol.slices[0].mask.shape == vol.slices[0].instances.image_size
    assert vol.mask.shape == voxels.shape


def test_ensemble_runs_tta_on_each_member(monkeypatch):
    pred = predictor(AUG, tta=True, weights=["", ""])
    assert len(pred.models) == 2 and len(pred._tta) == 2
    calls = [record_inference(m, monkeypatch) for m in pred.models]
    (out,) = pred.run_model([pred.prepare(image(32, 40))])
    assert [len(c) for c in calls] == [2, 2]  # each member: the box pass and the mask pass
    assert out.image_size == (32, 40) and out.has("votes")


@pytest.fixture
def quiet(monkeypatch) -> None:
    """No console handlers from splash's logging set-up (they would outlive capsys)."""
    monkeypatch.setattr(splash_cli, "setup_logging", lambda: None)


def test_cli_tta_end_to_end(tmp_path, monkeypatch, capsys, quiet):
    png = tmp_path / "slice.png"
    cv2.imwrite(str(png), image(50, 70))
    calls = count_tta(monkeypatch)
    out = tmp_path / "out"
    status = main(["--input", str(png), "--output", str(out), "--tta", "--allow-untrained",
                   "--confidence-threshold", "0", *FAST, *AUG])
    assert status == 0, capsys.readouterr().err
    assert calls == [(50, 70)]
    mask = cv2.imread(str(out / "slice_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (50, 70)
    assert (out / "slice_splash.png").is_file() and (out / "slice_overlay.png").is_file()
    with (out / "results.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert int(row["area_px"]) == int((mask > 0).sum())
    results = json.loads((out / "results.json").read_text())
    assert results and all(r["segmentation"]["size"] == [50, 70] for r in results)


@pytest.mark.parametrize("how", [["--tta"], ["TEST.AUG.ENABLED", "True"]])
def test_cli_refuses_tta_with_an_exported_backend(tmp_path, monkeypatch, capsys, quiet, how):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"")  # refused before it is read
    png = tmp_path / "slice.png"
    cv2.imwrite(str(png), image())
    argv = ["--input", str(png), "--output", str(tmp_path / "out"), "--backend", "onnxruntime",
            "--weights", str(onnx)]
    assert main([*argv, *how]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("splash.py: error: test-time augmentation") and "\n" not in err
    assert "onnxruntime" in err and "--no-tta" in err
    assert not (tmp_path / "out").exists()
    if how != ["--tta"]:  # the config turned it on: --no-tta turns it off again

        def load_exported(*args, **kwargs):
            raise ExportError("the exported model would load here")

        monkeypatch.setattr(predictor_module, "load_exported", load_exported)
        assert main([*argv, "--no-tta", *how]) == 2
        assert capsys.readouterr().err.strip() == \
            "splash.py: error: the exported model would load here"
