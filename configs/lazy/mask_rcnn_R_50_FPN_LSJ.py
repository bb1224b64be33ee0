"""Large scale jitter from scratch, in the shape of Detectron2's
new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py (Ghiasi et al. 2021), for tumor slices: SyncBN,
a 2-conv RPN head, a 4conv1fc box head, resize x [0.1, 2.0] then crop/pad to 512x512 (the
YAML path's TUMOR.AUGMENT.LSJ), AMP on GPUs and a larger batch.

    python tools/lazyconfig_train_net.py --config-file lazy/mask_rcnn_R_50_FPN_LSJ.py --num-gpus 8
"""

from .mask_rcnn_R_50_FPN_scratch import dataloader, lr_multiplier, model, optimizer, train, tumor

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train", "tumor"]

train.amp.enabled = True
train.ddp.fp16_compression = True
train.device = "cuda"
_bottom_up = model.backbone.bottom_up
_bottom_up.freeze_at = 0
# SyncBN; the heads use NaiveSyncBatchNorm with stats_mode "N" (they may see no RoI), by name
# so that the config stays a YAML file (Detectron2's uses a lambda)
_bottom_up.stem.norm = _bottom_up.stages.norm = model.backbone.norm = "SyncBN"
model.roi_heads.box_head.conv_norm = model.roi_heads.mask_head.conv_norm = "naiveSyncBN_N"
model.proposal_generator.head.conv_dims = [-1, -1]  # 2conv in RPN
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]  # 4conv1fc box head
model.roi_heads.box_head.fc_dims = [1024]

image_size = 512
dataloader.train.augment.lsj.update(enabled=True, size=image_size, min_scale=0.1, max_scale=2.0)
dataloader.train.total_batch_size = 16
dataloader.train.num_workers = 8

train.max_iter = 20000
lr_multiplier.steps = (16000, 18500)
lr_multiplier.warmup_iters = 500
lr_multiplier.warmup_factor = 0.067
optimizer.lr = 0.04
optimizer.weight_decay = 4e-5
train.checkpointer.period = 2000
train.eval_period = 2000
train.output_dir = "output/lazy/mask_rcnn_R_50_FPN_LSJ"
