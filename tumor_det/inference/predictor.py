"""A batching Mask R-CNN predictor for MRI slices and volumes, one model or an ensemble.

:class:`TumorPredictor` is Detectron2's :class:`~detectron2.engine.DefaultPredictor` (one model
build and checkpoint load, the test-time ``ResizeShortestEdge``, ``INPUT.FORMAT``) that

* takes any MRI pixel array and applies :func:`tumor_det.io.intensity.to_model_input` (the rule the
  training data went through: 8-bit kept, other dtypes windowed by percentiles, grey -> BGR);
* runs several images per forward pass (:meth:`TumorPredictor.predict_batch`) under
  ``torch.inference_mode()``, optionally in float16 autocast on CUDA or bfloat16 autocast, in
  two steps: the raw
  model call (:meth:`TumorPredictor.raw_outputs`, per-RoI outputs) and the post-processing
  (:meth:`TumorPredictor.postprocess`: score threshold, Detectron2's ``detector_postprocess``,
  optional mask probabilities, :func:`tumor_det.modeling.postprocessing.merge_instances` when
  ``TUMOR.MERGE.ENABLED``);
* with several checkpoints (``weights=[...]``, e.g. one per cross-validation fold) runs each
  model and fuses their detections (:func:`tumor_det.inference.ensemble.fuse_models`);
* returns a :class:`TumorPrediction`: the instances above the score threshold on the CPU, their
  union mask, scores and areas (in mm² when the pixel spacing is known);
* predicts volumes slice by slice (:meth:`TumorPredictor.predict_volume`) on the display slices
  of :func:`tumor_det.io.geometry.display_slices` (the slicing rule training data went through),
  optionally skipping the slices without anatomy (:func:`tumor_det.export.tracing.anatomy_slices`;
  ``skip_empty``, on in ``tools/splash.py``), links the
  detections into 3D lesions (:func:`tumor_det.inference.lesions.find_lesions`) and maps the masks back
  into the input's grid (:class:`VolumePrediction`);
* runs the PyTorch model (``backend="torch"``, optionally with the norm layers folded into the
  convolutions and channels_last weights: :meth:`TumorPredictor.optimize`) or a model exported by
  :mod:`tumor_det.export.tracing` (``backend="torchscript"``: ``model.ts``; ``"onnxruntime"``:
  ``model.onnx``) through the same pre- and post-processing: the exported graph replaces
  :meth:`TumorPredictor.raw_outputs` only;
* with ``tta=True`` (``tools/splash.py --tta``, or ``TEST.AUG.ENABLED``) runs test-time
  augmentation as evaluation does (:class:`tumor_det.modeling.meta_arch.TumorRCNNWithTTA`: the copies of
  ``TEST.AUG``, boxes merged by NMS, masks averaged): it replaces the raw model call, and the
  post-processing (threshold, masks, probabilities, merge) is the plain path's. PyTorch backend
  only; an ensemble runs it on each member before fusing.

Example::

    from tumor_det.config.config import get_tumor_cfg
    from tumor_det.inference.predictor import TumorPredictor

    cfg = get_tumor_cfg("configs/quick_cpu.yaml", ["MODEL.WEIGHTS", "model_final.pth"])
    predictor = TumorPredictor(cfg)
    pred = predictor(cv2.imread("slice.png", cv2.IMREAD_UNCHANGED))
    print(pred.num_tumors, pred.scores, pred.area_px)
    vol = predictor.predict_volume(load_nifti("scan.nii.gz"))  # tumor_det.io.load_nifti
    print(vol.num_tumors, vol.volume_ml, vol.slice_range, vol.lesions)
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.checkpoint.weights import resolve_weights
from tumor_det.config.config import resolve_device
from tumor_det.export.tracing import (
    BACKENDS,
    anatomy_slices,
    backend_for_file,
    cpu_bf16_supported,
    exported_config,
    find_exported,
    fuse_conv_norm,
    load_exported,
)
from tumor_det.inference.ensemble import fuse_models, merge_with_probabilities
from tumor_det.inference.lesions import Detections, Lesion, LesionMap, LesionRules, find_lesions
from tumor_det.io.geometry import Volume, display_slices, from_display_slices
from tumor_det.io.intensity import to_model_input
from tumor_det.modeling.meta_arch import TumorRCNNWithTTA, with_tta
from tumor_det.modeling.postprocessing import merge_instances
from tumor_det.utils.batching import batched

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

logger = logging.getLogger(__name__)

Spacing = tuple[float, float] | None


@dataclass
class TumorPrediction:
    """The prediction for one 2D image (original resolution, everything on the CPU)."""

    image: np.ndarray  # the 8-bit BGR image the model saw (before resizing)
    instances: Instances  # detections with score >= threshold (pred_boxes/classes/masks)
    mask: np.ndarray  # bool HxW: union of the instances' masks
    scores: list[float]
    areas_px: list[int]  # per instance
    pixel_spacing: Spacing = None  # (row, column) mm
    #: uint8 HxW, 0-255: per pixel the highest mask probability of the instances (when asked)
    probability: np.ndarray | None = None

    @property
    def num_tumors(self) -> int:
        return len(self.scores)

    @property
    def area_px(self) -> int:
        """Pixels in the union mask."""
        return int(self.mask.sum())

    @property
    def area_mm2(self) -> float | None:
        """Area of the union mask in mm², or None when the pixel spacing is unknown."""
        if self.pixel_spacing is None:
            return None
        return self.area_px * self.pixel_spacing[0] * self.pixel_spacing[1]


@dataclass
class VolumePrediction:
    """A volume's prediction; ``mask`` and ``labels`` are in the input's grid, ``slices`` in
    display order. Lesions dropped by the :class:`~tumor_det.inference.lesions.LesionRules` are gone from
    the mask, the labels and the slices (not from ``probabilities``, the model's raw output)."""

    mask: np.ndarray  # bool, same shape as the input volume
    affine: np.ndarray
    voxel_volume_mm3: float
    slices: list[TumorPrediction]  # display slices of the RAS-canonical volume (inferior first)
    lesion_map: LesionMap
    #: float32 in [0, 1] in the input's grid: the highest mask probability per voxel (or None)
    probabilities: np.ndarray | None = field(default=None, repr=False)

    @property
    def lesions(self) -> list[Lesion]:
        """3D lesions (26-connected), ids 1..N by best score."""
        return self.lesion_map.lesions

    @property
    def labels(self) -> np.ndarray:
        """Instance label map in the input's grid: 0 background, lesion ids 1..N."""
        return self.lesion_map.labels

    @property
    def num_tumors(self) -> int:
        return len(self.lesions)

    @property
    def tumor_scores(self) -> list[float]:
        """Per lesion (id order): the best score of the detections forming it."""
        return [lesion.score for lesion in self.lesions]

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def volume_ml(self) -> float:
        """Tumor volume in mL: voxel count x voxel volume (mm³) / 1000."""
        return self.voxels * self.voxel_volume_mm3 / 1000.0

    @property
    def slice_range(self) -> tuple[int, int] | None:
        """First and last display slice (canonical, 0-based, inferior first) with tumor."""
        hits = [k for k, p in enumerate(self.slices) if p.mask.any()]
        return (hits[0], hits[-1]) if hits else None


class UntrainedModelError(ValueError):
    """``MODEL.WEIGHTS`` is empty: a randomly initialised model would report random "tumors"."""


def check_weights(weights: str, allow_untrained: bool = False) -> None:
    """Raise :class:`UntrainedModelError` for empty ``weights`` unless ``allow_untrained``."""
    if not weights and not allow_untrained:
        raise UntrainedModelError(
            "no model weights (MODEL.WEIGHTS is empty): an untrained model reports random "
            "'tumors'. Train one (python tools/train_net.py --config-file "
            "configs/quick_cpu.yaml, or make demo) and pass its checkpoint with --weights "
            "output/quick_cpu/model_final.pth (or --weights last with the config's "
            "OUTPUT_DIR); --allow-untrained runs a random model anyway (tests, benchmarks)")


class TumorPredictor(DefaultPredictor):
    """Load the model(s) once; predict single images, batches of slices and volumes.

    ``score_threshold`` (default ``cfg.TUMOR.EVAL.SCORE_THRESHOLD``) selects the instances kept;
    ``fp16`` runs the model under float16 autocast (CUDA only; ignored on the CPU). A config
    without weights raises :class:`UntrainedModelError` unless ``allow_untrained`` (tests and
    speed benchmarks only: a random model's "tumors" mean nothing). ``weights`` (checkpoint
    paths or ``last``) replaces ``MODEL.WEIGHTS``; several make an ensemble of one model each,
    fused by :func:`tumor_det.inference.ensemble.fuse_models`. ``probabilities`` keeps each slice's mask
    probability map (:attr:`TumorPrediction.probability`).

    ``backend`` (:data:`tumor_det.export.tracing.BACKENDS`; default: ``"torch"``, or the backend of
    ``exported``/``MODEL.WEIGHTS`` when that is a ``.ts``/``.onnx`` file) chooses what runs the
    network; ``exported`` is the file (or export folder) of ``tools/export_model.py``, which
    also sets the settings fixed in its graph (test size, input format, score threshold,
    detections per image) from the ``config.yaml`` beside it. ``fuse`` and ``channels_last``
    (:meth:`optimize`) speed up the PyTorch model without changing its answers beyond float
    rounding; ``bf16`` runs it under bfloat16 autocast (on CPUs with native bfloat16: faster,
    but scores move by ~1e-3, so it is off by default). ``skip_empty`` is
    :meth:`predict_volume`'s default: do not run the slices without anatomy.

    ``tta`` runs test-time augmentation (``cfg.TEST.AUG``: each image resized to every
    ``MIN_SIZES`` entry, and flipped with ``FLIP``; :class:`~tumor_det.modeling.meta_arch.TumorRCNNWithTTA`)
    in place of the raw model call, each member of an ensemble on its own; the results go
    through the same :meth:`postprocess`. It needs the PyTorch model: an exported backend
    raises ValueError.
    """

    def __init__(self, cfg: CfgNode, score_threshold: float | None = None, fp16: bool = False,
                 allow_untrained: bool = False, weights: Sequence[str] | None = None,
                 probabilities: bool = False, backend: str | None = None,
                 exported: str | None = None, fuse: bool = False, channels_last: bool = False,
                 bf16: bool = False, skip_empty: bool = False, tta: bool = False):
        cfg = cfg.clone()
        if not cfg.MODEL.MASK_ON:
            raise ValueError("TumorPredictor needs a mask model (MODEL.MASK_ON True)")
        weights = [str(w) for w in weights] if weights else [cfg.MODEL.WEIGHTS]
        self.backend, exported_file = _backend_and_file(backend, exported, weights)
        if tta and exported_file is not None:
            raise ValueError(f"test-time augmentation (--tta or TEST.AUG.ENABLED) runs the "
                             f"PyTorch model, not the {self.backend} backend's exported graph: "
                             "give a .pth checkpoint, or turn it off (--no-tta)")
        #: the exported model (tumor_det.export.tracing.ExportedModel) of an exported backend, or None
        self.exported = None
        if exported_file is not None:
            cfg = _with_exported_settings(cfg, exported_file)
            resolve_device(cfg)
            self._init_exported(cfg, exported_file)
        else:
            for w in weights:
                check_weights(w, allow_untrained)
            self.weights = [resolve_weights(w, cfg.OUTPUT_DIR) for w in weights]
            cfg.MODEL.WEIGHTS = self.weights[0]
            resolve_device(cfg)
            super().__init__(cfg)  # builds the model, loads MODEL.WEIGHTS, sets self.aug
            self.models = [self.model] + [self._load_model(w) for w in self.weights[1:]]
            if len(self.models) > 1:
                logger.info("ensemble of %d models: %s", len(self.models),
                            ", ".join(self.weights))
        self.score_threshold = float(
            cfg.TUMOR.EVAL.SCORE_THRESHOLD if score_threshold is None else score_threshold
        )
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.fp16 = fp16 and self.device.type == "cuda" and self.exported is None
        if fp16 and not self.fp16:
            logger.warning("--fp16 needs CUDA and the torch backend: running in float32 on %s",
                           self.device)
        self.bf16 = bool(bf16) and self.exported is None
        if bf16 and self.exported is not None:
            logger.warning("bf16 applies to the torch backend: the exported model runs as "
                           "exported")
        elif self.bf16 and self.device.type == "cpu" and not cpu_bf16_supported():
            logger.warning("this CPU has no native bfloat16 (AVX512-BF16/AMX): bf16 autocast "
                           "will be slow")
        if self.exported is not None and self.score_threshold < self.exported_threshold:
            logger.warning("score threshold %.3g is below the exported model's "
                           "SCORE_THRESH_TEST %.3g: detections between them were dropped in "
                           "the graph (export again with a lower threshold to see them)",
                           self.score_threshold, self.exported_threshold)
        self.skip_empty = skip_empty
        if fuse or channels_last:
            self.optimize(fuse=fuse, channels_last=channels_last)
        self.tta = bool(tta)
        #: per model (by id): its TTA wrapper, whose copies of one image share forward passes
        self._tta: dict[int, TumorRCNNWithTTA] = {}
        if self.tta:
            aug = cfg.TEST.AUG
            copies = len(aug.MIN_SIZES) * (2 if aug.FLIP else 1)
            self._tta = {id(m): with_tta(cfg, m, batch_size=copies) for m in self.models}
            logger.info("test-time augmentation: %d copies per image (sizes %s, max %d, "
                        "flip %s)", copies, tuple(aug.MIN_SIZES), aug.MAX_SIZE, aug.FLIP)
        self.percentiles = tuple(cfg.TUMOR.INTENSITY_PERCENTILES)
        self.probabilities = probabilities
        merge = cfg.TUMOR.MERGE
        #: (iou, containment) of the class-agnostic merge: TUMOR.MERGE.IOU/CONTAINMENT
        self.merge_thresholds = (float(merge.IOU), float(merge.CONTAINMENT))
        #: the merge of one model's detections, or None when TUMOR.MERGE.ENABLED is False
        self.merge = self.merge_thresholds if merge.ENABLED else None

    def _init_exported(self, cfg: CfgNode, path) -> None:
        """What ``DefaultPredictor.__init__`` sets, with the exported model instead of a
        PyTorch one (nothing is built or loaded by Detectron2)."""
        from detectron2.data import MetadataCatalog
        from detectron2.data import transforms as T

        self.cfg = cfg
        self.weights = [str(path)]
        self.model = None
        self.models = []
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST],
                                        cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.exported = load_exported(path, self.backend, device=cfg.MODEL.DEVICE)
        self.exported_threshold = float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
        logger.info("%s backend: %s", self.backend, path)

    def optimize(self, fuse: bool = True, channels_last: bool = False) -> TumorPredictor:
        """Faster PyTorch inference, the same answers up to float rounding: fold each norm
        layer that follows a convolution into it (:func:`tumor_det.export.tracing.fuse_conv_norm`)
        and/or keep the weights channels_last (oneDNN's preferred layout on CPUs, tensor cores'
        on GPUs). It changes the modules (of every ensemble member): call it once the weights
        are in place, and never train the model afterwards. Returns the predictor."""
        for model in self.models:
            if fuse:
                fuse_conv_norm(model)
            if channels_last:
                model.to(memory_format=torch.channels_last)
        return self

    def _load_model(self, weights: str) -> torch.nn.Module:
        """Another ensemble member: the same architecture with ``weights``."""
        model = build_model(self.cfg)
        model.eval()
        TumorCheckpointer(model).load(weights)
        return model

    def __call__(self, image: np.ndarray, rgb: bool = False,
                 pixel_spacing: Spacing = None) -> TumorPrediction:  # type: ignore[override]
        """Predict one image (any dtype; grey or colour, BGR unless ``rgb``)."""
        return self.predict_batch([image], rgb=rgb, pixel_spacing=pixel_spacing)[0]

    def prepare(self, image: np.ndarray, rgb: bool = False) -> np.ndarray:
        """The 8-bit BGR image the model sees, by the training data's intensity rule."""
        return to_model_input(image, rgb=rgb, percentiles=self.percentiles)

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        rgb: bool = False,
        pixel_spacing: Spacing | Sequence[Spacing] = None,
    ) -> list[TumorPrediction]:
        """Predict several images in one forward pass.

        ``pixel_spacing`` is one (row, col) mm pair for all images or one entry per image.
        """
        if not images:
            return []
        spacings = _per_image(pixel_spacing, len(images))
        prepared = [self.prepare(image, rgb) for image in images]
        results = self.run_model(prepared)
        return [
            self._summarise(image, inst, spacing)
            for image, inst, spacing in zip(prepared, results, spacings, strict=True)
        ]

    def model_inputs(self, images: list[np.ndarray]) -> list[dict]:
        """Detectron2 inputs of 8-bit BGR images, resized as ``DefaultPredictor`` does; with
        :attr:`tta`, at their own size on the CPU (the TTA mapper resizes each copy)."""
        inputs = []
        for image in images:
            if self.input_format == "RGB":
                image = image[:, :, ::-1]
            if self.tta:
                tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            else:
                resized = self.aug.get_transform(image).apply_image(image)
                tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
                tensor = tensor.to(self.device, non_blocking=True)
            inputs.append({"image": tensor, "height": image.shape[0], "width": image.shape[1]})
        return inputs

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.fp16:
            stack.enter_context(torch.autocast("cuda", torch.float16))
        return stack

    def raw_outputs(self, inputs: list[dict], model: torch.nn.Module | None = None,
                    ) -> list[Instances]:
        """The raw model call: per-RoI outputs in the resized images' frame (Detectron2's
        ``inference(..., do_postprocess=False)``: boxes, scores, classes, (N, 1, M, M) mask
        probabilities); with an exported backend, the exported graph (one image per run).
        With :attr:`tta`, :meth:`~tumor_det.modeling.meta_arch.TumorRCNNWithTTA.raw_inference` per image:
        the same fields in the original image's frame (averaged mask probabilities)."""
        if self.exported is not None:
            return self.exported([inp["image"] for inp in inputs])
        model = model or self.model
        with self._context():
            if not self.bf16:
                return self._inference(inputs, model)
            with torch.autocast(self.device.type, torch.bfloat16):
                raw = self._inference(inputs, model)
            for inst in raw:  # post-processing in float32, as without autocast
                for name in ("scores", "pred_masks"):
                    inst.set(name, inst.get(name).float())
                inst.pred_boxes = Boxes(inst.pred_boxes.tensor.float())
            return raw

    def _inference(self, inputs: list[dict], model: torch.nn.Module) -> list[Instances]:
        if self.tta:
            tta = self._tta[id(model)]
            return [tta.raw_inference(inp) for inp in inputs]
        return model.inference(inputs, do_postprocess=False)

    def postprocess(self, raw: list[Instances], inputs: list[dict],
                    probabilities: bool = False) -> list[Instances]:
        """Raw outputs -> full-image detections with score >= ``score_threshold``.

        Detectron2's ``detector_postprocess`` (boxes scaled to the input size and clipped, empty
        boxes dropped, masks pasted and thresholded at 0.5); with ``probabilities`` also
        ``mask_probs`` (uint8 0-255, ``paste_masks_in_image(..., threshold=-1)``); then the
        class-agnostic merge when ``TUMOR.MERGE.ENABLED`` (the merged ``mask_probs`` are the
        members' maximum).
        """
        out = []
        with self._context():
            for inst, inp in zip(raw, inputs, strict=True):
                inst = inst[inst.scores >= self.score_threshold]
                if probabilities:
                    inst.soft_masks = inst.pred_masks[:, 0]
                inst = detector_postprocess(inst, inp["height"], inp["width"])
                if probabilities:
                    inst.mask_probs = paste_masks_in_image(
                        inst.soft_masks, inst.pred_boxes, inst.image_size, threshold=-1)
                    inst.remove("soft_masks")
                if self.merge is not None:
                    merge = merge_with_probabilities if probabilities else merge_instances
                    inst = merge(inst, *self.merge)
                out.append(inst.to("cpu"))
        return out

    def run_model(self, images: list[np.ndarray]) -> list[Instances]:
        """Run every model on all images at once (:meth:`raw_outputs`, :meth:`postprocess`);
        an ensemble's detections are fused per image (:func:`~tumor_det.inference.ensemble.fuse_models`)."""
        inputs = self.model_inputs(images)
        if self.exported is not None or len(self.models) == 1:
            return self.postprocess(self.raw_outputs(inputs), inputs, self.probabilities)
        per_model = [self.postprocess(self.raw_outputs(inputs, model), inputs, True)
                     for model in self.models]
        # an ensemble always merges (else every tumor would come once per model)
        fused = [fuse_models(dets, *self.merge_thresholds)
                 for dets in zip(*per_model, strict=True)]
        if not self.probabilities:
            for inst in fused:
                inst.remove("mask_probs")
        return fused

    def _summarise(self, image: np.ndarray, instances: Instances,
                   spacing: Spacing) -> TumorPrediction:
        instances = instances[instances.scores >= self.score_threshold]
        probability = None
        if instances.has("mask_probs"):
            probs = instances.mask_probs
            probability = (probs.amax(dim=0).numpy() if len(probs)
                           else np.zeros(image.shape[:2], np.uint8))
            instances.remove("mask_probs")
        return _prediction(image, instances, spacing, probability)

    def predict_volume(
        self,
        volume: Volume | np.ndarray,
        affine: np.ndarray | None = None,
        batch_size: int = 4,
        on_batch: Callable[[int], None] | None = None,
        plane: str = "axial",
        rules: LesionRules | None = None,
        skip_empty: bool | None = None,
    ) -> VolumePrediction:
        """Predict a 3D volume on its ``plane`` slices, ``batch_size`` per forward pass.

        ``volume`` is a :class:`~tumor_det.io.geometry.Volume` or an array with its voxel -> RAS+
        mm ``affine`` (identity when omitted). Slices are cut and shown as training data was
        (:func:`tumor_det.io.geometry.display_slices`); their detections are linked into 3D lesions
        and filtered by ``rules`` (default :class:`~tumor_det.inference.lesions.LesionRules`); the masks
        come back in the input's grid. ``skip_empty`` (default: the predictor's): slices without
        anatomy (:func:`tumor_det.export.tracing.anatomy_slices`: air, the zero background of
        skull-stripped scans) are not run and get no detection; the others are predicted as
        without it (only the 3D lesion rules see their neighbours' detections).
        ``on_batch`` is called with the number of slices done (skipped ones included).
        """
        if not isinstance(volume, Volume):
            volume = Volume(np.asarray(volume), np.eye(4) if affine is None else affine)
        slices, spacing = display_slices(volume, plane)
        if skip_empty is None:
            skip_empty = self.skip_empty
        keep = anatomy_slices(slices) if skip_empty else np.ones(len(slices), bool)
        preds: list[TumorPrediction | None] = [None] * len(slices)
        for batch in batched(np.flatnonzero(keep).tolist(), max(1, batch_size)):
            done = self.predict_batch([slices[k] for k in batch], pixel_spacing=spacing)
            for k, pred in zip(batch, done, strict=True):
                preds[k] = pred
            if on_batch:
                on_batch(len(batch))
        skipped = np.flatnonzero(~keep).tolist()
        for k in skipped:
            preds[k] = self._no_detection(slices[k], spacing)
        if skipped:
            logger.debug("%d of %d slices without anatomy not run", len(skipped), len(slices))
            if on_batch:
                on_batch(len(skipped))
        return volume_prediction(preds, volume, plane, rules)

    def _no_detection(self, image: np.ndarray, spacing: Spacing) -> TumorPrediction:
        """The prediction of a slice that is not run: its model input, no instance."""
        shown = self.prepare(image)
        h, w = shown.shape[:2]
        inst = Instances((h, w), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                         pred_classes=torch.zeros(0, dtype=torch.int64),
                         pred_masks=torch.zeros(0, h, w, dtype=torch.bool))
        probability = np.zeros((h, w), np.uint8) if self.probabilities else None
        return _prediction(shown, inst, spacing, probability)


def _backend_and_file(backend: str | None, exported, weights: Sequence[str]):
    """(backend, exported file or None) from the arguments: an explicit ``exported`` path, or
    a single ``.ts``/``.onnx`` weights file, means an exported backend."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    path = exported
    if path is None and len(weights) == 1 and backend_for_file(weights[0]):
        path = weights[0]
    if path is None and backend not in (None, "torch"):
        raise ValueError(f"backend {backend}: give the exported model (tools/export_model.py "
                         "writes model.ts and model.onnx) as --weights / exported")
    if path is None:
        return "torch", None
    if len(weights) > 1:
        raise ValueError("an ensemble runs PyTorch checkpoints, not exported models")
    if backend == "torch":
        raise ValueError(f"{path} is an exported model: --backend torch runs a PyTorch "
                         "checkpoint (.pth)")
    file, backend = find_exported(path, backend)
    return backend, file


#: Config keys fixed in an exported graph or defining its input, taken from the exported model's
#: config.yaml (tumor_det.export.tracing writes it beside the model).
EXPORTED_KEYS = ("INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST", "INPUT.FORMAT",
                 "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                 "MODEL.ROI_HEADS.NUM_CLASSES", "TEST.DETECTIONS_PER_IMAGE")


def _with_exported_settings(cfg: CfgNode, path) -> CfgNode:
    """``cfg`` with :data:`EXPORTED_KEYS` from the exported model's config (logged when they
    differ); post-processing settings (``TUMOR.*``) stay ``cfg``'s."""
    saved = exported_config(path)
    if saved is None:
        logger.warning("no config.yaml beside %s: the given config must match the exported "
                       "model's input size and format", path)
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    for key in EXPORTED_KEYS:
        *parents, leaf = key.split(".")
        src, dst = saved, cfg
        for part in parents:
            src, dst = src[part], dst[part]
        if dst[leaf] != src[leaf]:
            logger.info("%s = %s from the exported model's config (given: %s)", key, src[leaf],
                        dst[leaf])
            dst[leaf] = src[leaf]
    return cfg


def _prediction(image: np.ndarray, instances: Instances, spacing: Spacing,
                probability: np.ndarray | None = None) -> TumorPrediction:
    h, w = image.shape[:2]
    if len(instances):
        masks = instances.pred_masks.bool()
        instances.pred_masks = masks
        union = masks.any(dim=0).numpy()
        areas = [int(a) for a in masks.flatten(1).sum(dim=1)]
    else:
        union = np.zeros((h, w), bool)
        areas = []
    return TumorPrediction(
        image=image,
        instances=instances,
        mask=union,
        scores=[float(s) for s in instances.scores.float()],
        areas_px=areas,
        pixel_spacing=spacing,
        probability=probability,
    )


def _detections(pred: TumorPrediction) -> Detections:
    inst = pred.instances
    if not len(inst):
        return Detections(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, *pred.mask.shape), bool))
    return Detections(inst.scores.float().numpy(), inst.pred_classes.numpy(),
                      inst.pred_masks.bool().numpy())


def _keep(pred: TumorPrediction, keep: np.ndarray) -> TumorPrediction:
    """``pred`` without what lies outside ``keep`` (bool HxW: the kept lesions)."""
    inst = pred.instances
    if not len(inst) or keep[pred.mask].all():
        return pred
    kept = torch.from_numpy(keep)
    masks = inst.pred_masks.bool() & kept
    inst = inst[masks.flatten(1).any(dim=1)]
    inst.pred_masks = inst.pred_masks.bool() & kept
    return _prediction(pred.image, inst, pred.pixel_spacing, pred.probability)


def volume_prediction(preds: list[TumorPrediction], volume: Volume, plane: str = "axial",
                      rules: LesionRules | None = None) -> VolumePrediction:
    """Stack slice predictions, link them into 3D lesions (:func:`find_lesions`), apply
    ``rules`` and map the masks into ``volume``'s grid."""
    lesion_map = find_lesions([_detections(p) for p in preds], volume, plane, rules)
    for lesion in lesion_map.dropped:
        logger.info("lesion dropped (slices %d-%d, %.4f mL): %s", *lesion.slices,
                    lesion.volume_ml, lesion.dropped)
    if lesion_map.dropped:
        preds = [_keep(p, lesion_map.display_labels[k] > 0) for k, p in enumerate(preds)]
    probabilities = None
    if preds and all(p.probability is not None for p in preds):
        stacked = np.stack([p.probability for p in preds])
        probabilities = from_display_slices(stacked, volume, plane).astype(np.float32) / 255.0
    return VolumePrediction(
        mask=lesion_map.labels > 0,
        affine=volume.affine,
        voxel_volume_mm3=volume.voxel_volume_mm3,
        slices=preds,
        lesion_map=lesion_map,
        probabilities=probabilities,
    )


def _per_image(spacing: Spacing | Sequence[Spacing], n: int) -> list[Spacing]:
    if spacing is None:
        return [None] * n
    if len(spacing) == 2 and all(isinstance(v, numbers.Real) for v in spacing):
        return [(float(spacing[0]), float(spacing[1]))] * n
    spacings = list(spacing)
    if len(spacings) != n:
        raise ValueError(f"got {len(spacings)} pixel spacings for {n} images")
    return spacings
