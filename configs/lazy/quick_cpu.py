"""The main job's model in minutes on 2 CPU cores on the built-in synthetic data (the twin of
quick_cpu.yaml): the scratch config with a ResNet-18, BatchNorm, 256 px inputs and a short
schedule.

    python tools/lazyconfig_train_net.py --config-file lazy/quick_cpu.py train.max_iter=100
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from .mask_rcnn_R_50_FPN_scratch import dataloader, lr_multiplier, model, optimizer, train, tumor

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train", "tumor"]

train.device = "cpu"
_bottom_up = model.backbone.bottom_up
_bottom_up.stages.depth = 18
del _bottom_up.stages.stride_in_1x1  # BasicBlock has no 1x1 convolution
_bottom_up.stem.norm = _bottom_up.stages.norm = model.backbone.norm = "BN"
model.backbone.out_channels = 128
_rpn = model.proposal_generator
_rpn.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
_rpn.post_nms_topk = (300, 100)
_roi = model.roi_heads
_roi.batch_size_per_image = 64
_roi.box_head.conv_dims = []
_roi.box_head.fc_dims = [256, 256]
_roi.box_head.conv_norm = _roi.mask_head.conv_norm = ""
_roi.box_predictor.input_shape = L(ShapeSpec)(channels=256)
_roi.mask_head.conv_dims = [128, 128, 128, 128, 128]

dataloader.train.names = ("tumor_synth_train",)
dataloader.train.num_workers = 0
dataloader.train.input.min_size_train = (224, 256, 288)
dataloader.train.input.max_size_train = 512
dataloader.test.dataset.names = "tumor_synth_val"
dataloader.test.mapper.augmentations[0].short_edge_length = 256
dataloader.test.mapper.augmentations[0].max_size = 512
dataloader.test.num_workers = 0
# an operating point for a short schedule (quick_cpu.yaml: Dice 0.29 at 0.5, 0.68 at 0.3)
dataloader.evaluator.score_threshold = 0.3

optimizer.lr = 0.02
lr_multiplier.warmup_iters = 50
lr_multiplier.steps = (220, 280)
train.max_iter = 300
train.checkpointer.period = 100
train.eval_period = 100
train.output_dir = "output/lazy/quick_cpu"
tumor.test_aug.min_sizes = (224, 256, 288)
tumor.test_aug.max_size = 512
