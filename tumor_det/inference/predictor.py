"""A batching Mask R-CNN predictor for MRI slices and volumes, one model or an ensemble.

:class:`TumorPredictor` is built like Detectron2's :class:`~detectron2.engine.DefaultPredictor`
(``TumorPredictor(cfg)``: one model build and checkpoint load of ``MODEL.WEIGHTS``, the
test-time ``ResizeShortestEdge``, ``INPUT.FORMAT``), with named constructors for the other
ways to run: :meth:`TumorPredictor.ensemble` (several checkpoints, e.g. one per
cross-validation fold, fused by :func:`tumor_det.inference.ensemble.fuse_models`),
:meth:`TumorPredictor.from_exported` (a ``model.ts``/``model.onnx`` of ``tools/export_model.py``
through :mod:`tumor_det.inference.backends`) and :meth:`TumorPredictor.from_weights` (whichever
of them a list of ``--weights`` names). How it runs (float16/bfloat16 autocast, folded norms,
channels_last, mask probabilities, skipping empty slices, test-time augmentation) is one
:class:`PredictorOptions`; which detections count is the config's one score threshold
(:func:`tumor_det.evaluation.threshold.score_threshold`: ``TUMOR.EVAL.SCORE_THRESHOLD``).

It

* takes any MRI pixel array and applies :func:`tumor_det.io.intensity.to_model_input` (the rule
  the training data went through: 8-bit kept, other dtypes windowed by percentiles, grey ->
  BGR);
* runs several images per forward pass (:meth:`TumorPredictor.predict_batch`) under
  ``torch.inference_mode()``, in two steps: the raw model call
  (:meth:`TumorPredictor.raw_outputs`, per-RoI outputs; the exported graph or test-time
  augmentation replace this step only) and the post-processing
  (:meth:`TumorPredictor.postprocess`: score threshold, Detectron2's ``detector_postprocess``,
  optional mask probabilities, :func:`tumor_det.modeling.postprocessing.merge_instances` when
  ``TUMOR.MERGE.ENABLED``);
* returns a :class:`~tumor_det.inference.results.TumorPrediction` per image;
* predicts volumes slice by slice (:meth:`TumorPredictor.predict_volume`) on the display slices
  of :func:`tumor_det.io.geometry.display_slices`, optionally skipping the slices without
  anatomy (:func:`tumor_det.inference.anatomy.anatomy_slices`), links the detections into 3D
  lesions and maps the masks back into the input's grid
  (:class:`~tumor_det.inference.results.VolumePrediction`).

Example::

    from tumor_det import TumorPredictor, get_tumor_cfg

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
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.checkpoint.weights import resolve_weights
from tumor_det.config.config import resolve_device
from tumor_det.evaluation.threshold import score_threshold
from tumor_det.inference.anatomy import anatomy_slices
from tumor_det.inference.backends import choose_backend, load_exported, with_exported_settings
from tumor_det.inference.ensemble import fuse_models, merge_with_probabilities
from tumor_det.inference.fast import cpu_bf16_supported, fuse_conv_norm
from tumor_det.inference.lesions import LesionRules
from tumor_det.inference.results import (
    Spacing,
    TumorPrediction,
    VolumePrediction,
    make_prediction,
    volume_prediction,
)
from tumor_det.io.geometry import Volume, display_slices
from tumor_det.io.intensity import to_model_input
from tumor_det.modeling.meta_arch import TumorRCNNWithTTA, with_tta
from tumor_det.modeling.postprocessing import merge_instances
from tumor_det.utils.batching import batched

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

logger = logging.getLogger(__name__)

__all__ = ["PredictorOptions", "TumorPrediction", "TumorPredictor", "UntrainedModelError",
           "VolumePrediction", "check_weights", "volume_prediction"]


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


@dataclass(frozen=True)
class PredictorOptions:
    """How a :class:`TumorPredictor` runs; none of them changes which detections count.

    ``fp16``: float16 autocast (CUDA and the torch backend only; ignored elsewhere, with a
    warning). ``bf16``: bfloat16 autocast (on CPUs with native bfloat16 faster, but scores move by
    ~1e-3, so it is off by default). ``fuse`` and ``channels_last``: :meth:`TumorPredictor.optimize`
    (same answers up to float rounding). ``probabilities``: keep each slice's mask probability map
    (:attr:`~tumor_det.inference.results.TumorPrediction.probability`). ``skip_empty``:
    :meth:`TumorPredictor.predict_volume`'s default, do not run the slices without anatomy.
    ``tta``: test-time augmentation (``cfg.TEST.AUG``: each image resized to every
    ``MIN_SIZES`` entry, and flipped with ``FLIP``;
    :class:`~tumor_det.modeling.meta_arch.TumorRCNNWithTTA`) in place of the raw model call, each
    member of an ensemble on its own; PyTorch checkpoints only. ``allow_untrained``: accept a
    config without weights (tests and speed benchmarks only: a random model's "tumors" mean
    nothing).
    """

    fp16: bool = False
    bf16: bool = False
    fuse: bool = False
    channels_last: bool = False
    probabilities: bool = False
    skip_empty: bool = False
    tta: bool = False
    allow_untrained: bool = False


class TumorPredictor:
    """Load the model(s) once; predict single images, batches of slices and volumes.

    ``TumorPredictor(cfg)`` runs ``MODEL.WEIGHTS`` (a checkpoint, ``last``, or an exported
    ``.ts``/``.onnx`` file); a config without weights raises :class:`UntrainedModelError`
    unless ``options.allow_untrained``. The other constructors: :meth:`ensemble`,
    :meth:`from_exported`, :meth:`from_weights`. Attributes as Detectron2's
    ``DefaultPredictor``'s (``cfg``, ``model``, ``aug``, ``input_format``, ``metadata``), plus
    ``models`` (every ensemble member; empty for an exported model), ``exported``
    (:class:`~tumor_det.inference.backends.ExportedModel` or None), ``backend``, ``weights``
    and ``score_threshold`` (:func:`~tumor_det.evaluation.threshold.score_threshold` of the
    config).
    """

    def __init__(self, cfg: CfgNode, options: PredictorOptions | None = None):
        self._setup(cfg, [cfg.MODEL.WEIGHTS], None, None, options)

    @classmethod
    def ensemble(cls, cfg: CfgNode, weights: Sequence[str | os.PathLike],
                 options: PredictorOptions | None = None) -> TumorPredictor:
        """One model per checkpoint in ``weights`` (paths or ``last``); their detections are
        fused per image (:func:`~tumor_det.inference.ensemble.fuse_models`). One checkpoint
        gives the plain predictor."""
        return cls._new(cfg, [str(w) for w in weights], "torch", None, options)

    @classmethod
    def from_exported(cls, cfg: CfgNode, path: str | os.PathLike, backend: str | None = None,
                      options: PredictorOptions | None = None) -> TumorPredictor:
        """Run the model exported by ``tools/export_model.py`` at ``path`` (``model.ts``,
        ``model.onnx`` or their folder) with ``backend`` (default: by the file's suffix;
        :data:`~tumor_det.inference.backends.BACKENDS`). The settings fixed in its graph (test
        size, input format, candidate threshold, detections per image) come from the
        ``config.yaml`` beside it; post-processing (``TUMOR.*``) stays ``cfg``'s."""
        return cls._new(cfg, [cfg.MODEL.WEIGHTS], backend, path, options)

    @classmethod
    def from_weights(cls, cfg: CfgNode, weights: Sequence[str | os.PathLike] | None = None,
                     backend: str | None = None, options: PredictorOptions | None = None,
                     ) -> TumorPredictor:
        """What ``tools/splash.py --weights W... [--backend B]`` runs: one exported file, one
        checkpoint, or an ensemble (:func:`~tumor_det.inference.backends.choose_backend`);
        ``weights`` default to ``MODEL.WEIGHTS``."""
        names = [str(w) for w in weights] if weights else [cfg.MODEL.WEIGHTS]
        return cls._new(cfg, names, backend, None, options)

    @classmethod
    def _new(cls, cfg, weights, backend, exported, options) -> TumorPredictor:
        self = cls.__new__(cls)
        self._setup(cfg, weights, backend, exported, options)
        return self

    def _setup(self, cfg: CfgNode, weights: list[str], backend: str | None, exported,
               options: PredictorOptions | None) -> None:
        options = options or PredictorOptions()
        self.options = options
        cfg = cfg.clone()
        if not cfg.MODEL.MASK_ON:
            raise ValueError("TumorPredictor needs a mask model (MODEL.MASK_ON True)")
        self.backend, exported_file = choose_backend(backend, exported, weights)
        if options.tta and exported_file is not None:
            raise ValueError(f"test-time augmentation (--tta or TEST.AUG.ENABLED) runs the "
                             f"PyTorch model, not the {self.backend} backend's exported graph: "
                             "give a .pth checkpoint, or turn it off (--no-tta)")
        if exported_file is not None:
            cfg = with_exported_settings(cfg, exported_file)
            self.weights = [str(exported_file)]
        else:
            for w in weights:
                check_weights(w, options.allow_untrained)
            self.weights = [resolve_weights(w, cfg.OUTPUT_DIR) for w in weights]
            cfg.MODEL.WEIGHTS = self.weights[0]
        resolve_device(cfg)
        # what Detectron2's DefaultPredictor.__init__ sets, for both kinds of model
        self.cfg = cfg
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST],
                                        cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ("RGB", "BGR"), self.input_format
        #: the exported model (tumor_det.inference.backends.ExportedModel), or None
        self.exported = None
        if exported_file is not None:
            self.model, self.models = None, []
            self.exported = load_exported(exported_file, self.backend, device=cfg.MODEL.DEVICE)
            self.exported_threshold = float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
            logger.info("%s backend: %s", self.backend, exported_file)
        else:
            self.models = [self._load_model(w, k == 0) for k, w in enumerate(self.weights)]
            self.model = self.models[0]
            if len(self.models) > 1:
                logger.info("ensemble of %d models: %s", len(self.models),
                            ", ".join(self.weights))
        self.score_threshold = score_threshold(cfg)
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.fp16 = options.fp16 and self.device.type == "cuda" and self.exported is None
        if options.fp16 and not self.fp16:
            logger.warning("--fp16 needs CUDA and the torch backend: running in float32 on %s",
                           self.device)
        self.bf16 = bool(options.bf16) and self.exported is None
        if options.bf16 and self.exported is not None:
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
        self.skip_empty = options.skip_empty
        if options.fuse or options.channels_last:
            self.optimize(fuse=options.fuse, channels_last=options.channels_last)
        self.tta = bool(options.tta)
        #: per model (by id): its TTA wrapper, whose copies of one image share forward passes
        self._tta: dict[int, TumorRCNNWithTTA] = {}
        if self.tta:
            aug = cfg.TEST.AUG
            copies = len(aug.MIN_SIZES) * (2 if aug.FLIP else 1)
            self._tta = {id(m): with_tta(cfg, m, batch_size=copies) for m in self.models}
            logger.info("test-time augmentation: %d copies per image (sizes %s, max %d, "
                        "flip %s)", copies, tuple(aug.MIN_SIZES), aug.MAX_SIZE, aug.FLIP)
        self.percentiles = tuple(cfg.TUMOR.INTENSITY_PERCENTILES)
        self.probabilities = options.probabilities
        merge = cfg.TUMOR.MERGE
        #: (iou, containment) of the class-agnostic merge: TUMOR.MERGE.IOU/CONTAINMENT
        self.merge_thresholds = (float(merge.IOU), float(merge.CONTAINMENT))
        #: the merge of one model's detections, or None when TUMOR.MERGE.ENABLED is False
        self.merge = self.merge_thresholds if merge.ENABLED else None
        #: the merged detection's mask: TUMOR.MERGE.MASK ("best" or "union")
        self.merge_mask = str(merge.MASK)

    def optimize(self, fuse: bool = True, channels_last: bool = False) -> TumorPredictor:
        """Faster PyTorch inference, the same answers up to float rounding: fold each norm
        layer that follows a convolution into it (:func:`tumor_det.inference.fast.fuse_conv_norm`)
        and/or keep the weights channels_last (oneDNN's preferred layout on CPUs, tensor cores'
        on GPUs). It changes the modules (of every ensemble member): call it once the weights
        are in place, and never train the model afterwards. Returns the predictor."""
        for model in self.models:
            if fuse:
                fuse_conv_norm(model)
            if channels_last:
                model.to(memory_format=torch.channels_last)
        return self

    def _load_model(self, weights: str, first: bool = False) -> torch.nn.Module:
        """A model of ``cfg``'s architecture with ``weights``, in eval mode; the first one as
        Detectron2's ``DefaultPredictor`` loads it, the other ensemble members through
        :class:`~tumor_det.checkpoint.checkpointer.TumorCheckpointer`."""
        model = build_model(self.cfg)
        model.eval()
        if first:
            DetectionCheckpointer(model).load(weights)
        else:
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
        With :attr:`tta`, :meth:`~tumor_det.modeling.meta_arch.TumorRCNNWithTTA.raw_inference` per
        image: the same fields in the original image's frame (averaged mask probabilities)."""
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
                    inst = merge(inst, *self.merge, mask=self.merge_mask)
                out.append(inst.to("cpu"))
        return out

    def run_model(self, images: list[np.ndarray]) -> list[Instances]:
        """Run every model on all images at once (:meth:`raw_outputs`, :meth:`postprocess`);
        an ensemble's detections are fused per image
        (:func:`~tumor_det.inference.ensemble.fuse_models`)."""
        inputs = self.model_inputs(images)
        if self.exported is not None or len(self.models) == 1:
            return self.postprocess(self.raw_outputs(inputs), inputs, self.probabilities)
        per_model = [self.postprocess(self.raw_outputs(inputs, model), inputs, True)
                     for model in self.models]
        # an ensemble always merges (else every tumor would come once per model)
        fused = [fuse_models(dets, *self.merge_thresholds, mask=self.merge_mask)
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
        return make_prediction(image, instances, spacing, probability)

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
        (:func:`tumor_det.io.geometry.display_slices`); their detections are linked into 3D
        lesions and filtered by ``rules`` (default
        :class:`~tumor_det.inference.lesions.LesionRules`); the masks come back in the input's
        grid. ``skip_empty`` (default: the predictor's): slices without
        anatomy (:func:`tumor_det.inference.anatomy.anatomy_slices`: air, the zero background of
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
        return make_prediction(shown, inst, spacing, probability)


def _per_image(spacing: Spacing | Sequence[Spacing], n: int) -> list[Spacing]:
    if spacing is None:
        return [None] * n
    if len(spacing) == 2 and all(isinstance(v, numbers.Real) for v in spacing):
        return [(float(spacing[0]), float(spacing[1]))] * n
    spacings = list(spacing)
    if len(spacings) != n:
        raise ValueError(f"got {len(spacings)} pixel spacings for {n} images")
    return spacings
