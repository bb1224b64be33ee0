"""Mask R-CNN R50-FPN for 512x512 brain MRI slices: the LazyConfig twin of
Base-Tumor-RCNN-FPN.yaml (the base of the other configs in this folder).

Detectron2's model zoo ``common/`` pieces (the Mask R-CNN FPN model, SGD, the train dict) with
tumor-det's model (TumorRCNN: one detection per tumor; TumorMaskHead: mixed supervision), the
YAML path's training loader (TumorDatasetMapper, build_train_augmentation, weighted sampling) and
evaluator (TumorEvaluator + COCOEvaluator). Keys a YAML config sets are noted beside each value.
"""

from tumor_det.engine.lazy_train import build_evaluator, build_train_loader, warmup_multistep
from tumor_det.modeling.mask_head import TumorMaskHead
from tumor_det.modeling.meta_arch import TumorRCNN

import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, get_detection_dataset_dicts
from detectron2.layers import ShapeSpec
from omegaconf import OmegaConf

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model._target_ = TumorRCNN  # MODEL.META_ARCHITECTURE
model.merge_enabled = True  # TUMOR.MERGE.*
model.merge_iou = 0.5
model.merge_containment = 0.8
model.merge_mask = "best"
# detections below the operating point never grow a kept mask (TumorRCNN.from_config)
model.merge_min_union_score = "${dataloader.evaluator.score_threshold}"
model.backbone.bottom_up.freeze_at = 2  # MODEL.BACKBONE.FREEZE_AT
model.proposal_generator.head.in_channels = "${...backbone.out_channels}"
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.pre_nms_topk = (2000, 500)  # RPN.PRE_NMS_TOPK_{TRAIN,TEST}
model.proposal_generator.post_nms_topk = (1000, 200)  # RPN.POST_NMS_TOPK_{TRAIN,TEST}
_roi = model.roi_heads
_roi.num_classes = 1
_roi.batch_size_per_image = 128
_roi.box_head.input_shape = L(ShapeSpec)(channels="${....backbone.out_channels}", height=7,
                                        width=7)
_roi.box_predictor.input_shape = L(ShapeSpec)(channels=1024)  # the last of _box_head.fc_dims
_roi.box_predictor.test_topk_per_image = 10  # TEST.DETECTIONS_PER_IMAGE
_roi.mask_head._target_ = TumorMaskHead  # ROI_MASK_HEAD.NAME
_roi.mask_head.input_shape = L(ShapeSpec)(channels="${....backbone.out_channels}", height=14,
                                         width=14)

dataloader = OmegaConf.create()
dataloader.train = L(build_train_loader)(
    names=("brain_tumor_train",),  # DATASETS.TRAIN
    dataset_weights=(),  # TUMOR.DATASET_WEIGHTS
    filter_empty=False,  # DATALOADER.FILTER_EMPTY_ANNOTATIONS
    total_batch_size=4,  # SOLVER.IMS_PER_BATCH
    num_workers=2,
    mask_on=True,
    input=dict(  # INPUT.* (lower case)
        min_size_train=(448, 480, 512, 544, 576),
        min_size_train_sampling="choice",
        max_size_train=1024,
        random_flip="horizontal",
        mask_format="polygon",
        format="${model.input_format}",
    ),
    augment=dict(  # TUMOR.AUGMENT.* (lower case; (1, 1) and 0 = off)
        rotation=10.0,
        brightness=(0.9, 1.1),
        contrast=(0.9, 1.1),
        gamma=(1.0, 1.0),
        bias_field=0.0,
        noise_std=0.0,
        elastic=dict(prob=0.0, alpha=12.0, sigma=16.0),
        lsj=dict(enabled=False, size=256, min_scale=0.5, max_scale=2.0),
        copy_paste=dict(prob=0.0, scale=(0.75, 1.25)),
    ),
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="brain_tumor_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=512, max_size=1024)],
        image_format="${model.input_format}",
    ),
    num_workers=2,
)
dataloader.evaluator = L(build_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}",
    score_threshold=0.5,  # TUMOR.EVAL.*
    lesion_iou=0.1,
    pixel_spacing_mm=0.0,
    coco=True,
)

optimizer = model_zoo.get_config("common/optim.py").SGD
optimizer.lr = 0.01  # SOLVER.BASE_LR
lr_multiplier = L(warmup_multistep)(max_iter="${train.max_iter}", steps=(2000, 2600),
                                    warmup_iters=200)

train = model_zoo.get_config("common/train.py").train
train.max_iter = 3000
train.checkpointer.period = 500  # SOLVER.CHECKPOINT_PERIOD
train.checkpointer.max_to_keep = 100
train.eval_period = 500  # TEST.EVAL_PERIOD
train.log_period = 20
train.seed = -1
train.output_dir = "output/lazy/base"

tumor = dict(  # the other TUMOR.* keys (lower case)
    datasets_root="",
    best_metric="tumor/dice",
    best_mode="max",
    val_loss_period=0,
    test_aug=dict(enabled=False, min_sizes=(448, 512, 576), max_size=1024, flip=True),
)
