"""TumorRCNN (one tumor, one detection), its TTA wrapper, and evaluation with TTA."""

from __future__ import annotations

import json
from pathlib import Path

from tumor_det.config.config import get_config_file, get_tumor_cfg
from tumor_det.data import register_all
from tumor_det.engine.trainer import evaluate
from tumor_det.modeling.meta_arch import TumorRCNN, TumorRCNNWithTTA, with_tta
from tumor_det.modeling.postprocessing import merge_instances

import pytest
import torch
from detectron2.modeling import GeneralizedRCNN, GeneralizedRCNNWithTTA, build_model
from detectron2.structures import Boxes, Instances
from toy_data import toy_opts, write_toy_dataset

SIZE = 64


def _cfg(*opts: str):
    return get_tumor_cfg(get_config_file("quick_cpu.yaml"), ["MODEL.DEVICE", "cpu", *opts])


def _stacked(image_size=(SIZE, SIZE)) -> Instances:
    """Raw ROI-head output: box B lies inside box A (one tumor, two detections), C apart."""
    inst = Instances(image_size)
    inst.pred_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0], [12.0, 12.0, 36.0, 36.0],
                                          [44.0, 44.0, 60.0, 60.0]]))
    inst.scores = torch.tensor([0.9, 0.8, 0.7])
    inst.pred_classes = torch.tensor([0, 0, 0])
    inst.pred_masks = torch.ones(3, 1, 28, 28)  # each mask fills its box once pasted
    return inst


def _models(monkeypatch, merge: bool) -> tuple[GeneralizedRCNN, TumorRCNN]:
    """Detectron2's GeneralizedRCNN and a TumorRCNN with its weights, both ROI heads made to
    return :func:`_stacked` detections."""
    torch.manual_seed(0)
    plain = build_model(_cfg("MODEL.META_ARCHITECTURE", "GeneralizedRCNN")).eval()
    ours = build_model(_cfg("TUMOR.MERGE.ENABLED", str(merge))).eval()
    assert type(plain) is GeneralizedRCNN and type(ours) is TumorRCNN
    # same parameter names: a GeneralizedRCNN checkpoint loads into TumorRCNN, strictly
    ours.load_state_dict(plain.state_dict(), strict=True)
    for model in (plain, ours):
        monkeypatch.setattr(model.roi_heads, "forward",
                            lambda images, *a, **k: ([_stacked() for _ in range(len(images))], {}))
    return plain, ours


def _run(model, **kwargs):
    inputs = [{"image": torch.zeros(3, SIZE, SIZE), "height": SIZE, "width": SIZE}]
    with torch.no_grad():
        return model.inference(inputs, **kwargs) if kwargs else model(inputs)


def _same(a: Instances, b: Instances) -> None:
    assert len(a) == len(b)
    for field in ("scores", "pred_classes", "pred_masks"):
        assert torch.equal(a.get(field), b.get(field)), field
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)


def test_tumor_rcnn_merges_stacked_detections(monkeypatch):
    plain, ours = _models(monkeypatch, merge=True)
    raw = _run(plain)[0]["instances"]
    assert len(raw) == 3  # Detectron2 keeps both boxes on the one tumor
    merged = _run(ours)[0]["instances"]
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7])
    assert merged.pred_masks.shape == (2, SIZE, SIZE)
    assert merged.pred_masks[0].sum() == raw.pred_masks[0].sum() > raw.pred_masks[1].sum()
    assert merged.pred_masks[1].equal(raw.pred_masks[2])
    _same(merged, merge_instances(raw, 0.5, 0.8))
    # the raw per-RoI output (what TTA and TumorPredictor ask for) is not merged
    _same(_run(ours, do_postprocess=False)[0], _run(plain, do_postprocess=False)[0])


def test_merge_disabled_gives_detectron2_output(monkeypatch):
    plain, ours = _models(monkeypatch, merge=False)
    _same(_run(ours)[0]["instances"], _run(plain)[0]["instances"])


def test_merge_thresholds_come_from_the_config():
    model = build_model(_cfg("TUMOR.MERGE.IOU", "0.3", "TUMOR.MERGE.CONTAINMENT", "1.1"))
    assert (model.merge.enabled, model.merge.iou, model.merge.containment) == (True, 0.3, 1.1)


@pytest.mark.parametrize("merge", [True, False])
def test_tta_merges_after_augmentation(monkeypatch, merge):
    cfg = _cfg("TUMOR.MERGE.ENABLED", str(merge))
    model = build_model(cfg).eval()
    tta = with_tta(cfg, model)
    assert isinstance(tta, GeneralizedRCNNWithTTA) and isinstance(tta, TumorRCNNWithTTA)
    # TTA's merged detections of one image before mask pasting: stacked boxes whose per-RoI
    # masks fill them
    raw = _stacked()
    monkeypatch.setattr(TumorRCNNWithTTA, "raw_inference", lambda self, inp: raw)
    out = tta([{"image": torch.zeros(3, SIZE, SIZE), "height": SIZE, "width": SIZE}])
    assert len(out[0]["instances"]) == (2 if merge else 3)


@pytest.mark.slow
def test_eval_only_with_tta_writes_its_metrics(tmp_path):
    root = tmp_path / "datasets"
    write_toy_dataset(root, counts={"val": 3})
    register_all(root)
    out = tmp_path / "run"
    cfg = _cfg(*toy_opts(root, out), "TUMOR.EVAL.COCO", "True",
               "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(56, 64)",
               "TEST.AUG.MAX_SIZE", "128", "MODEL.WEIGHTS", "")
    cfg.freeze()
    results = evaluate(cfg)  # what tools/train_net.py --eval-only runs
    assert {"tumor", "segm", "tumor_TTA", "segm_TTA", "bbox_TTA"} <= set(results)
    assert results["tumor_TTA"]["images"] == 3
    for folder in ("inference", "inference_TTA"):
        done = Path(out, folder, "toy_val")
        assert (done / "tumor_metrics_per_image.csv").read_text().count("\n") == 4
        predictions = json.loads((done / "coco_instances_results.json").read_text())
        assert all(p["image_id"] in (1, 2, 3) for p in predictions)
