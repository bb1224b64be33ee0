"""Detectron2's checkpointer with atomic saves and torchvision weights converted on load."""

from __future__ import annotations

import os
import re

from tumor_det.utils.atomic import atomic_path, remove_stale_temporaries, write_text

import torch
from detectron2.checkpoint import DetectionCheckpointer

# torchvision ResNet / Mask R-CNN parameter names → Detectron2's. Written by hand: Detectron2
# only ships this as a script outside its package (tools/convert-torchvision-to-d2.py, ResNet only).
_RESNET_RULES = [
    (r"^conv1\.", "stem.conv1."),
    (r"^bn1\.", "stem.conv1.norm."),
    (r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
    (r"\.bn(\d)\.", lambda m: f".conv{m.group(1)}.norm."),
]
_MASKRCNN_RULES = [
    (r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.",
     lambda m: f"backbone.fpn_lateral{int(m.group(1)) + 2}."),
    (r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.",
     lambda m: f"backbone.fpn_output{int(m.group(1)) + 2}."),
    (r"^rpn\.head\.conv\.0\.0\.", "proposal_generator.rpn_head.conv."),
    (r"^rpn\.head\.cls_logits\.", "proposal_generator.rpn_head.objectness_logits."),
    (r"^rpn\.head\.bbox_pred\.", "proposal_generator.rpn_head.anchor_deltas."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_heads.box_head.fc1."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_heads.box_head.fc2."),
    (r"^roi_heads\.box_predictor\.", "roi_heads.box_predictor."),
    (r"^roi_heads\.mask_head\.(\d)\.0\.",
     lambda m: f"roi_heads.mask_head.mask_fcn{int(m.group(1)) + 1}."),
    (r"^roi_heads\.mask_head\.mask_fcn(\d)\.", r"roi_heads.mask_head.mask_fcn\1."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_heads.mask_head.deconv."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_heads.mask_head.predictor."),
]


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def is_torchvision_state_dict(state: dict) -> bool:
    """True for a torchvision ResNet or Mask R-CNN ``state_dict`` (not Detectron2's layout)."""
    return "conv1.weight" in state or "backbone.body.conv1.weight" in state


def convert_torchvision_state_dict(state: dict) -> dict:
    """Rename a torchvision ResNet-50 or ``maskrcnn_resnet50_fpn`` state dict for Detectron2.

    A plain ResNet maps onto ``backbone.bottom_up`` (its ``fc`` layer is dropped). torchvision's
    class-specific predictors (91 COCO classes, background first) do not match Detectron2's
    layout; the checkpointer then skips them for a shape mismatch and they start from scratch.
    """
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("backbone.body."):
            new = "backbone.bottom_up." + _rename(key[len("backbone.body."):], _RESNET_RULES)
        elif key.startswith(("backbone.", "rpn.", "roi_heads.")):
            new = _rename(key, _MASKRCNN_RULES)
        elif key.startswith("fc."):
            continue
        else:
            new = "backbone.bottom_up." + _rename(key, _RESNET_RULES)
        if new.startswith("roi_heads.box_predictor.") or new.startswith(
                "roi_heads.mask_head.predictor."):
            continue  # class layout differs (background first, 91 classes): re-initialised
        out[new] = value
    return out


class TumorCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose saves are atomic and which reads torchvision weights.

    A run killed during a save leaves the previous checkpoint and ``last_checkpoint`` intact:
    both are written to a temporary file and renamed into place. A hidden temporary file that a
    killed save left behind (never named ``*.pth``) is removed by the next save.
    """

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        remove_stale_temporaries(self.save_dir)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_path(save_file) as tmp:
            torch.save(data, tmp)
        if name != "model_best":  # --resume continues from the newest periodic checkpoint
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_text(path, last_filename_basename)

    def _load_file(self, filename: str) -> dict:
        loaded = super()._load_file(filename)
        model = loaded.get("model", {})
        if isinstance(model, dict) and is_torchvision_state_dict(model):
            self.logger.info(f"{filename}: torchvision weights, converted to Detectron2 names")
            loaded = {"model": convert_torchvision_state_dict(model), "__author__": "torchvision"}
        return loaded
