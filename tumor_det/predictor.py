"""A batching Mask R-CNN predictor for MRI slices and volumes.

:class:`TumorPredictor` is Detectron2's :class:`~detectron2.engine.DefaultPredictor` (one model
build and checkpoint load, the test-time ``ResizeShortestEdge``, ``INPUT.FORMAT``) that

* takes any MRI pixel array and applies :func:`tumor_det.intensity.to_model_input` (the rule the
  training data went through: 8-bit kept, other dtypes windowed by percentiles, grey -> BGR);
* runs several images per forward pass (:meth:`TumorPredictor.predict_batch`) under
  ``torch.inference_mode()``, optionally in float16 autocast on CUDA;
* returns a :class:`TumorPrediction`: the instances above the score threshold on the CPU, their
  union mask, scores and areas (in mm² when the pixel spacing is known);
* predicts volumes slice by slice (:meth:`TumorPredictor.predict_volume`) on the display slices
  of :func:`tumor_det.geometry.display_slices` (the slicing rule training data went through) and
  maps the mask back into the input's grid (:class:`VolumePrediction`).

Example::

    from tumor_det.config import get_tumor_cfg
    from tumor_det.predictor import TumorPredictor

    cfg = get_tumor_cfg("configs/quick_cpu.yaml", ["MODEL.WEIGHTS", "model_final.pth"])
    predictor = TumorPredictor(cfg)
    pred = predictor(cv2.imread("slice.png", cv2.IMREAD_UNCHANGED))
    print(pred.num_tumors, pred.scores, pred.area_px)
    vol = predictor.predict_volume(load_nifti("scan.nii.gz"))  # tumor_det.io.load_nifti
    print(vol.num_tumors, vol.volume_ml, vol.slice_range)
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tumor_det.batching import batched
from tumor_det.config import resolve_device
from tumor_det.geometry import Volume, display_slices, from_display_slices
from tumor_det.intensity import to_model_input
from tumor_det.weights import resolve_weights

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

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
    """A volume's prediction; ``mask`` is in the input's grid, ``slices`` in display order."""

    mask: np.ndarray  # bool, same shape as the input volume
    affine: np.ndarray
    voxel_volume_mm3: float
    slices: list[TumorPrediction]  # display slices of the RAS-canonical volume (inferior first)
    num_tumors: int  # 3D connected components (26-connected) of the mask
    tumor_scores: list[float]  # per component: the best score of the detections forming it

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
    """Load the model once; predict single images, batches of slices and volumes.

    ``score_threshold`` (default ``cfg.TUMOR.EVAL.SCORE_THRESHOLD``) selects the instances kept;
    ``fp16`` runs the model under float16 autocast (CUDA only; ignored on the CPU). A config
    without weights raises :class:`UntrainedModelError` unless ``allow_untrained`` (tests and
    speed benchmarks only: a random model's "tumors" mean nothing).
    """

    def __init__(self, cfg: CfgNode, score_threshold: float | None = None, fp16: bool = False,
                 allow_untrained: bool = False):
        cfg = cfg.clone()
        if not cfg.MODEL.MASK_ON:
            raise ValueError("TumorPredictor needs a mask model (MODEL.MASK_ON True)")
        check_weights(cfg.MODEL.WEIGHTS, allow_untrained)
        cfg.MODEL.WEIGHTS = resolve_weights(cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR)
        resolve_device(cfg)
        super().__init__(cfg)  # builds the model, loads MODEL.WEIGHTS, sets self.aug
        self.score_threshold = float(
            cfg.TUMOR.EVAL.SCORE_THRESHOLD if score_threshold is None else score_threshold
        )
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.fp16 = fp16 and self.device.type == "cuda"
        if fp16 and not self.fp16:
            logger.warning("--fp16 needs CUDA: running in float32 on %s", self.device)
        self.percentiles = tuple(cfg.TUMOR.INTENSITY_PERCENTILES)

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

    def run_model(self, images: list[np.ndarray]) -> list[Instances]:
        """Resize 8-bit BGR images as DefaultPredictor does and run the model on all at once."""
        inputs = []
        for image in images:
            if self.input_format == "RGB":
                image = image[:, :, ::-1]
            resized = self.aug.get_transform(image).apply_image(image)
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            inputs.append({"image": tensor.to(self.device, non_blocking=True),
                           "height": image.shape[0], "width": image.shape[1]})
        autocast = (torch.autocast("cuda", torch.float16) if self.fp16
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            outputs = self.model(inputs)
        return [out["instances"].to("cpu") for out in outputs]

    def _summarise(self, image: np.ndarray, instances: Instances,
                   spacing: Spacing) -> TumorPrediction:
        instances = instances[instances.scores >= self.score_threshold]
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
        )

    def predict_volume(
        self,
        volume: Volume | np.ndarray,
        affine: np.ndarray | None = None,
        batch_size: int = 4,
        on_batch: Callable[[int], None] | None = None,
        plane: str = "axial",
    ) -> VolumePrediction:
        """Predict a 3D volume on its ``plane`` slices, ``batch_size`` per forward pass.

        ``volume`` is a :class:`~tumor_det.geometry.Volume` or an array with its voxel -> RAS+
        mm ``affine`` (identity when omitted). Slices are cut and shown as training data was
        (:func:`tumor_det.geometry.display_slices`); the mask comes back in the input's grid.
        """
        if not isinstance(volume, Volume):
            volume = Volume(np.asarray(volume), np.eye(4) if affine is None else affine)
        slices, spacing = display_slices(volume, plane)
        preds: list[TumorPrediction] = []
        for batch in batched(slices, max(1, batch_size)):
            preds.extend(self.predict_batch(batch, pixel_spacing=spacing))
            if on_batch:
                on_batch(len(batch))
        return _volume_prediction(preds, volume, plane)


def _volume_prediction(preds: list[TumorPrediction], volume: Volume,
                       plane: str) -> VolumePrediction:
    """Stack slice predictions; count 3D tumors and give each its best detection score."""
    from scipy import ndimage

    disp_mask = np.stack([p.mask for p in preds])
    labels, count = ndimage.label(disp_mask, structure=np.ones((3, 3, 3), bool))
    best = np.zeros(count + 1)
    for k, pred in enumerate(preds):
        for score, inst_mask in zip(pred.scores, pred.instances.pred_masks.numpy(), strict=True):
            ids = np.unique(labels[k][inst_mask])
            best[ids] = np.maximum(best[ids], score)
    return VolumePrediction(
        mask=from_display_slices(disp_mask, volume, plane),
        affine=volume.affine,
        voxel_volume_mm3=volume.voxel_volume_mm3,
        slices=preds,
        num_tumors=int(count),
        tumor_scores=[float(s) for s in best[1:]],
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
