"""Mask R-CNN R50-FPN built from the project's configs trains one step and infers on the CPU."""

from __future__ import annotations

from tumor_det.config.config import get_config_file, get_tumor_cfg

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage


def _batch(size: int = 96) -> list[dict]:
    image = torch.zeros(3, size, size)
    image[:, 30:60, 20:50] = 200.0
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor([[20.0, 30.0, 50.0, 60.0]]))
    inst.gt_classes = torch.tensor([0])
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, 30:60, 20:50] = True
    inst.gt_masks = BitMasks(mask)
    return [{"image": image, "height": size, "width": size, "instances": inst}]


@pytest.mark.parametrize("config", ["mask_rcnn_R_50_FPN_scratch.yaml", "quick_cpu.yaml"])
def test_train_step_and_inference(config):
    cfg = get_tumor_cfg(get_config_file(config), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.MASK_ON and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    torch.manual_seed(0)
    model = build_model(cfg)
    if config.startswith("mask_rcnn_R_50"):
        assert cfg.MODEL.RESNETS.DEPTH == 50
        assert type(model.backbone).__name__ == "FPN"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    model.train()
    with EventStorage(0):
        losses = model(_batch())
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()

    model.eval()
    with torch.inference_mode():
        out = model([{"image": torch.from_numpy(np.zeros((3, 80, 80), np.float32))}])
    inst = out[0]["instances"]
    assert inst.image_size == (80, 80)
    assert inst.has("pred_masks") or len(inst) == 0


def test_unknown_config_key_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{get_config_file("quick_cpu.yaml")}"\nMODEL:\n  NOT_A_KEY: 1\n')
    with pytest.raises(KeyError, match="NOT_A_KEY"):
        get_tumor_cfg(bad)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        get_tumor_cfg(tmp_path / "nope.yaml")
