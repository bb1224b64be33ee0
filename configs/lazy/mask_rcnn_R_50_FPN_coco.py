"""Everything initialised from Detectron2's COCO Mask R-CNN R50-FPN 3x model (the twin of
mask_rcnn_R_50_FPN_coco.yaml); its 80-class predictors are re-initialised (shapes differ)."""

from .base_tumor_rcnn_fpn import dataloader, lr_multiplier, model, optimizer, train, tumor

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train", "tumor"]

train.init_checkpoint = ("detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/"
                         "model_final_f10217.pkl")  # --weights coco
model.backbone.bottom_up.stages.stride_in_1x1 = True
optimizer.lr = 0.005
lr_multiplier.steps = (1000, 1400)
train.max_iter = 1600
train.output_dir = "output/lazy/mask_rcnn_R_50_FPN_coco"
