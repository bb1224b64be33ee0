"""The ResNet-50 backbone from ImageNet (MSRA R-50, caffe2 layout), FPN and heads random (the
twin of mask_rcnn_R_50_FPN_imagenet.yaml)."""

from .base_tumor_rcnn_fpn import dataloader, lr_multiplier, model, optimizer, train, tumor

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train", "tumor"]

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"  # --weights imagenet
model.backbone.bottom_up.stages.stride_in_1x1 = True
train.output_dir = "output/lazy/mask_rcnn_R_50_FPN_imagenet"
