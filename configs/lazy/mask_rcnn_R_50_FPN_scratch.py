"""No pretrained weights, GroupNorm everywhere (the twin of mask_rcnn_R_50_FPN_scratch.yaml:
measured, FrozenBN from a random init diverges)."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from .base_tumor_rcnn_fpn import dataloader, lr_multiplier, model, optimizer, train, tumor

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train", "tumor"]

train.init_checkpoint = ""
model.pixel_std = [57.375, 57.120, 58.395]
_bottom_up = model.backbone.bottom_up
_bottom_up.freeze_at = 0
_bottom_up.stem.norm = _bottom_up.stages.norm = model.backbone.norm = "GN"
_bottom_up.stages.stride_in_1x1 = False
_box_head = model.roi_heads.box_head
_box_head.conv_dims = [256, 256, 256, 256]  # 4conv1fc
_box_head.fc_dims = [1024]
_box_head.conv_norm = model.roi_heads.mask_head.conv_norm = "GN"
model.roi_heads.box_predictor.input_shape = L(ShapeSpec)(channels=1024)
optimizer.lr = 0.02
lr_multiplier.steps = (4000, 4600)
train.max_iter = 5000
train.output_dir = "output/lazy/mask_rcnn_R_50_FPN_scratch"
