"""Both models from one initialisation (ours: Detectron2 + tumor_det; torchvision's
``maskrcnn_resnet50_fpn`` v1), their inputs and outputs, synthetic batches and a training step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.checkpoint.checkpointer import convert_torchvision_state_dict
from tumor_det.config.config import get_config_file, get_tumor_cfg
from tumor_det.data.synthetic import synthetic_slice
from tumor_det.data.validation import mask_to_polygons

import numpy as np
import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage
from torch import nn

from benchmarks.common import autocast

BASE_CONFIG = get_config_file("Base-Tumor-RCNN-FPN.yaml")
#: torchvision's ResNet conventions (RGB, 0..255 mean/std), applied to our side too.
TV_PIXEL_MEAN = [123.675, 116.28, 103.53]
TV_PIXEL_STD = [58.395, 57.12, 57.375]
MODELS = ("ours", "torchvision")


@dataclass
class ModelSpec:
    """What both models share: input size, detections, norm, device, initialisation."""

    size: int = 512
    detections: int = 10  # fixed number of detections per image at test time (score thresh 0)
    score_thresh: float = 0.0
    device: str = "cpu"
    norm: str = "frozen"  # "frozen" (FrozenBN, stem+res2 frozen) or "bn" (BatchNorm, all trained)
    tv_config: str = "stock"  # torchvision's own RPN/RoI settings, or "matched" to ours
    seed: int = 0
    opts: list[str] = field(default_factory=list)  # extra Detectron2 config options (ours)


def our_cfg(spec: ModelSpec, config_file: str | Path = BASE_CONFIG):
    """Our config (default: the base R50-FPN) with torchvision's ResNet conventions."""
    opts = [
        "MODEL.WEIGHTS", "",
        "MODEL.DEVICE", spec.device,
        "MODEL.RESNETS.STRIDE_IN_1X1", "False",
        "INPUT.FORMAT", "RGB",
        "MODEL.PIXEL_MEAN", str(TV_PIXEL_MEAN),
        "MODEL.PIXEL_STD", str(TV_PIXEL_STD),
        "INPUT.MIN_SIZE_TEST", str(spec.size),
        "INPUT.MAX_SIZE_TEST", str(2 * spec.size),
        "TEST.DETECTIONS_PER_IMAGE", str(spec.detections),
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(spec.score_thresh),
        "MODEL.RESNETS.NORM", "FrozenBN" if spec.norm == "frozen" else "BN",
        "MODEL.BACKBONE.FREEZE_AT", "2" if spec.norm == "frozen" else "0",
        "DATALOADER.NUM_WORKERS", "0",
        *spec.opts,
    ]
    return get_tumor_cfg(config_file, opts)


def tv_kwargs(spec: ModelSpec, cfg) -> dict:
    """torchvision MaskRCNN keyword arguments: stock v1 settings, or ours (``matched``)."""
    kw = dict(num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1, min_size=spec.size,
              max_size=2 * spec.size, box_detections_per_img=spec.detections,
              box_score_thresh=spec.score_thresh)
    if spec.tv_config == "matched":
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        m = cfg.MODEL
        kw.update(
            rpn_anchor_generator=AnchorGenerator(
                tuple(tuple(s) for s in m.ANCHOR_GENERATOR.SIZES),
                tuple(tuple(m.ANCHOR_GENERATOR.ASPECT_RATIOS[0]) for _ in
                      m.ANCHOR_GENERATOR.SIZES)),
            rpn_pre_nms_top_n_train=m.RPN.PRE_NMS_TOPK_TRAIN,
            rpn_pre_nms_top_n_test=m.RPN.PRE_NMS_TOPK_TEST,
            rpn_post_nms_top_n_train=m.RPN.POST_NMS_TOPK_TRAIN,
            rpn_post_nms_top_n_test=m.RPN.POST_NMS_TOPK_TEST,
            box_batch_size_per_image=m.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        )
    return kw


def build_torchvision(spec: ModelSpec, cfg) -> nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` (v1) as its builder makes it with weights=None,
    weights_backbone=None, except the norm layer (FrozenBN for ``norm="frozen"``)."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(spec.seed)
    frozen = spec.norm == "frozen"
    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3 if frozen else 5)
    return MaskRCNN(backbone, **tv_kwargs(spec, cfg)).to(spec.device)


def copy_torchvision_weights(tv_model: nn.Module, d2_model: nn.Module) -> dict[str, int]:
    """Load torchvision's weights into our model (tumor_det.checkpoint.checkpointer's renaming),
    including the class-specific predictors, which that renaming skips (torchvision: background
    first; Detectron2: background last)."""
    tv_state = tv_model.state_dict()
    state = convert_torchvision_state_dict(tv_state)
    k = d2_model.roi_heads.num_classes
    order = list(range(1, k + 1)) + [0]
    for name in ("weight", "bias"):
        state[f"roi_heads.box_predictor.cls_score.{name}"] = \
            tv_state[f"roi_heads.box_predictor.cls_score.{name}"][order]
        state[f"roi_heads.box_predictor.bbox_pred.{name}"] = \
            tv_state[f"roi_heads.box_predictor.bbox_pred.{name}"][4:]
        state[f"roi_heads.mask_head.predictor.{name}"] = \
            tv_state[f"roi_heads.mask_predictor.mask_fcn_logits.{name}"][1:]
    own = d2_model.state_dict()
    state = {n: v.to(own[n].device) for n, v in state.items()
             if n in own and own[n].shape == v.shape}
    missing, _ = d2_model.load_state_dict(state, strict=False)
    return {"loaded": len(state), "not_in_torchvision": len(missing)}


def build_pair(spec: ModelSpec, predictor: bool = True, config_file: str | Path = BASE_CONFIG):
    """(cfg, ours, torchvision) from one initialisation. ``ours`` is a TumorPredictor (eval
    mode; the model as built, nothing folded: ``TumorPredictor.optimize`` after the weights are
    copied) when ``predictor``, else the bare Detectron2 model (train mode)."""
    from tumor_det.evaluation.threshold import with_score_threshold
    from tumor_det.inference.predictor import PredictorOptions, TumorPredictor

    from detectron2.modeling import build_model

    cfg = our_cfg(spec, config_file)
    tv = build_torchvision(spec, cfg)
    if predictor:
        ours = TumorPredictor(with_score_threshold(cfg, 0.0),
                              PredictorOptions(allow_untrained=True, fuse=False))
        copy_torchvision_weights(tv, ours.model)
        tv.eval()
    else:
        ours = build_model(cfg)
        copy_torchvision_weights(tv, ours)
        ours.train()
        tv.train()
    return cfg, ours, tv


# ----------------------------------------------------------------------------- inference


def tv_predict(model: nn.Module, images: Sequence[np.ndarray], device: str,
               amp: bool = False) -> list[dict]:
    """torchvision inference on HxWx3 uint8 RGB arrays; masks thresholded at 0.5 (as ours)."""
    tensors = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).to(device)
               .float().div_(255) for im in images]
    with torch.inference_mode(), autocast(device, amp):
        outputs = model(tensors)
    return [{"boxes": o["boxes"].float().cpu(), "scores": o["scores"].float().cpu(),
             "labels": o["labels"].cpu(), "masks": (o["masks"][:, 0] > 0.5).cpu()}
            for o in outputs]


def tv_to_instances(out: dict, height: int, width: int) -> Instances:
    """A torchvision output dict as Detectron2 Instances (class ids shifted: background 0)."""
    inst = Instances((height, width))
    inst.pred_boxes = Boxes(out["boxes"])
    inst.scores = out["scores"]
    inst.pred_classes = out["labels"] - 1
    inst.pred_masks = out["masks"]
    return inst


# ----------------------------------------------------------------------------- data


@dataclass
class Sample:
    image: np.ndarray  # HxWx3 uint8 (grey replicated: RGB == BGR)
    masks: np.ndarray  # KxHxW bool


def synthetic_samples(n: int, size: int, seed: int = 0) -> list[Sample]:
    """``n`` MRI-like slices from the synthetic generator, drawn at ``size`` px."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img, masks = synthetic_slice(rng, size=size)
        stack = np.stack(masks) if masks else np.zeros((0, size, size), bool)
        out.append(Sample(np.repeat(img[:, :, None], 3, axis=2), stack))
    return out


def _boxes(masks: np.ndarray) -> torch.Tensor:
    """XYXY boxes of KxHxW bool masks (Detectron2's pixel-edge convention)."""
    return BitMasks(torch.from_numpy(masks)).get_bounding_boxes().tensor.reshape(-1, 4)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def to_d2_inputs(batch: Sequence[Sample], mask_format: str = "bitmask") -> list[dict]:
    """Training inputs for Detectron2 (RGB uint8 CHW tensors, Instances)."""
    inputs = []
    for s in batch:
        h, w = s.image.shape[:2]
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(_boxes(s.masks))
        inst.gt_classes = torch.zeros(len(s.masks), dtype=torch.int64)
        if mask_format == "polygon":
            # the exact pixel-edge outlines tumor_det's dataset writer stores
            inst.gt_masks = PolygonMasks([[np.asarray(p, np.float64) for p in
                                           mask_to_polygons(m)[0]] for m in s.masks])
        else:
            inst.gt_masks = BitMasks(torch.from_numpy(s.masks))
        inputs.append({"image": _image_tensor(s.image), "instances": inst, "height": h,
                       "width": w})
    return inputs


def to_tv_inputs(batch: Sequence[Sample], device: str) -> tuple[list, list]:
    """Training inputs for torchvision (float 0..1 images, target dicts)."""
    images, targets = [], []
    for s in batch:
        images.append(_image_tensor(s.image).to(device).float().div_(255))
        targets.append({"boxes": _boxes(s.masks).to(device),
                        "labels": torch.ones(len(s.masks), dtype=torch.int64, device=device),
                        "masks": torch.from_numpy(s.masks.astype(np.uint8)).to(device)})
    return images, targets


# ----------------------------------------------------------------------------- training


class TrainStep:
    """One SGD step (momentum 0.9, weight decay 1e-4) of ours or torchvision's on a batch of
    :class:`Sample`; float16 autocast with gradient scaling under ``amp`` (CUDA), gradient-norm
    clipping at ``clip``. The same loop for both models, so they are trained alike."""

    def __init__(self, which: str, model: nn.Module, lr: float, device: str, amp: bool = False,
                 mask_format: str = "bitmask", clip: float | None = None) -> None:
        self.which, self.model, self.device = which, model, device
        self.mask_format, self.clip = mask_format, clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=0.9, weight_decay=1e-4)
        self.amp = amp and device.startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.iter = 0

    def __call__(self, batch: Sequence[Sample]) -> float:
        """Forward, backward and step; returns the total loss."""
        with autocast(self.device, self.amp):
            if self.which == "ours":
                with EventStorage(self.iter):  # Detectron2 logs into it during training
                    losses = self.model(to_d2_inputs(batch, self.mask_format))
            else:
                losses = self.model(*to_tv_inputs(batch, self.device))
            loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iter += 1
        return float(loss.detach())
