"""Shared pieces of the benchmarks: machine info, load monitor, statistics, the two models built
from one initialisation, synthetic batches, and the ``benchmarks/RESULTS.md`` writer."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.checkpoint import convert_torchvision_state_dict
from tumor_det.config import CONFIG_DIR, get_tumor_cfg
from tumor_det.data.synthetic import synthetic_slice

import numpy as np
import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from tabulate import tabulate
from torch import nn

BASE_CONFIG = CONFIG_DIR / "Base-Tumor-RCNN-FPN.yaml"
#: torchvision's ResNet conventions (RGB, 0..255 mean/std), applied to our side too.
TV_PIXEL_MEAN = [123.675, 116.28, 103.53]
TV_PIXEL_STD = [58.395, 57.12, 57.375]
LOAD_LIMIT = 2.5  # 1-min load above this during a measurement: someone else used the cores


# ----------------------------------------------------------------------------- machine, load


def machine_info() -> dict[str, str]:
    """CPU model, cores, library versions, GPU (when used)."""
    import detectron2
    import torchvision

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": detectron2.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class LoadMonitor:
    """Sample the 1-min load average every ``period`` s in a thread (a context manager)."""

    def __init__(self, period: float = 2.0) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.period)

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else os.getloadavg()[0]

    @property
    def busy(self) -> bool:
        return self.max > LOAD_LIMIT

    def summary(self) -> str:
        s = self.samples or [os.getloadavg()[0]]
        flag = f" > {LOAD_LIMIT}: other jobs used the cores" if self.busy else ""
        return f"1-min load avg: start {s[0]:.2f}, max {max(s):.2f}, end {s[-1]:.2f}{flag}"


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def p90(values: Sequence[float]) -> float:
    return float(np.percentile(values, 90)) if len(values) else float("nan")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(device: str, amp: bool):
    """float16 autocast on CUDA when ``amp``; a no-op context otherwise."""
    return torch.autocast("cuda", torch.float16, enabled=amp and device.startswith("cuda"))


def interleaved(fns: dict, reps: int, warmup: int, device: str, per: int = 1
                ) -> dict[str, list[float]]:
    """Seconds per call / ``per`` of each function: warm-up, then ``reps`` rounds calling them
    in alternating order (load drift hits both alike)."""
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(reps):
        for n in (names if i % 2 == 0 else names[::-1]):
            sync(device)
            t = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append((time.perf_counter() - t) / per)
    return times


def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ----------------------------------------------------------------------------- models


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
    """Load torchvision's weights into our model (tumor_det.checkpoint's renaming), including the
    class-specific predictors (torchvision: background first; Detectron2: background last)."""
    tv_state = tv_model.state_dict()
    state = convert_torchvision_state_dict(tv_state)
    k = d2_model.roi_heads.num_classes
    order = list(range(1, k + 1)) + [0]
    state["roi_heads.box_predictor.cls_score.weight"] = \
        tv_state["roi_heads.box_predictor.cls_score.weight"][order]
    state["roi_heads.box_predictor.cls_score.bias"] = \
        tv_state["roi_heads.box_predictor.cls_score.bias"][order]
    for name in ("weight", "bias"):
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
    mode) when ``predictor``, else the bare Detectron2 model (train mode)."""
    from tumor_det.predictor import TumorPredictor

    from detectron2.modeling import build_model

    cfg = our_cfg(spec, config_file)
    tv = build_torchvision(spec, cfg)
    if predictor:
        ours = TumorPredictor(cfg, score_threshold=0.0)
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


def ours_predict(predictor, images: Sequence[np.ndarray]) -> list[Instances]:
    """Our inference (TumorPredictor.run_model: resize, to-tensor, model, to CPU)."""
    return predictor.run_model(list(images))


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


def boxes_of(masks: np.ndarray) -> np.ndarray:
    """XYXY boxes of bool masks (pixel-edge convention: x1 = last column + 1)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def _polygons(mask: np.ndarray) -> list[np.ndarray]:
    from tumor_det.data.synthetic import mask_to_polygons

    return [np.asarray(p, np.float64) for p in mask_to_polygons(mask)]


def to_d2_inputs(batch: Sequence[Sample], mask_format: str = "bitmask") -> list[dict]:
    """Training inputs for Detectron2 (RGB uint8 CHW tensors, Instances)."""
    inputs = []
    for s in batch:
        h, w = s.image.shape[:2]
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.from_numpy(boxes_of(s.masks)))
        inst.gt_classes = torch.zeros(len(s.masks), dtype=torch.int64)
        if mask_format == "polygon":
            inst.gt_masks = PolygonMasks([_polygons(m) for m in s.masks])
        else:
            inst.gt_masks = BitMasks(torch.from_numpy(s.masks))
        inputs.append({"image": torch.from_numpy(np.ascontiguousarray(
            s.image.transpose(2, 0, 1))), "instances": inst, "height": h, "width": w})
    return inputs


def to_tv_inputs(batch: Sequence[Sample], device: str) -> tuple[list, list]:
    """Training inputs for torchvision (float 0..1 images, target dicts)."""
    images, targets = [], []
    for s in batch:
        images.append(torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1)))
                      .to(device).float().div_(255))
        targets.append({"boxes": torch.from_numpy(boxes_of(s.masks)).reshape(-1, 4).to(device),
                        "labels": torch.ones(len(s.masks), dtype=torch.int64, device=device),
                        "masks": torch.from_numpy(s.masks.astype(np.uint8)).to(device)})
    return images, targets


# ----------------------------------------------------------------------------- report


@dataclass
class Report:
    """One task's console table(s) and the markdown section written to RESULTS.md."""

    task: str
    title: str
    lines: list[str] = field(default_factory=list)
    busy: bool = False  # the 1-min load exceeded LOAD_LIMIT during the measurement
    ratio: object = None  # the headline ratio(s), for callers and tests

    def add_table(self, rows: list[list], headers: list[str],
                  floatfmt: str | Sequence[str] = ".3g") -> None:
        print(tabulate(rows, headers=headers, floatfmt=floatfmt))
        print()
        self.lines += [tabulate(rows, headers=headers, tablefmt="github", floatfmt=floatfmt), ""]

    def add_text(self, text: str) -> None:
        print(text)
        self.lines += [text, ""]

    def markdown(self, info: dict[str, str], argv: Sequence[str]) -> str:
        machine = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("cpu", "cores"))
        head = [
            f"## Benchmark: {self.title}",
            "",
            f"`python tools/benchmark.py {shlex.join(argv)}`, "
            f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. Machine: {info['cpu']}, "
            f"{info['cores']} cores; {machine}.",
            "",
        ]
        return "\n".join([_marker(self.task, "start"), *head, *self.lines, _marker(self.task,
                                                                                    "end")])


def _marker(task: str, which: str) -> str:
    return f"<!-- benchmark:{task}:{which} -->"


def write_section(path: str | Path, task: str, text: str) -> None:
    """Replace this task's marked section of ``path`` (append it when absent)."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    pattern = re.compile(re.escape(_marker(task, "start")) + ".*?" + re.escape(_marker(task,
                                                                                      "end")),
                         re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old)
    else:
        new = old.rstrip("\n") + ("\n\n" if old.strip() else "") + text + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def now() -> float:
    return time.perf_counter()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
