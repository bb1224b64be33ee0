"""Training augmentation for few MRI slices: Detectron2 transforms plus what it lacks.

:func:`build_train_augmentation` composes ``cfg.TUMOR.AUGMENT`` into Detectron2 augmentations
(resize or large scale jitter, flip, rotation, elastic deformation, brightness/contrast, gamma,
bias field, noise). :class:`TumorDatasetMapper` is Detectron2's ``DatasetMapper`` with Simple
Copy-Paste of tumors between slices before those augmentations, and boxes recomputed from the
masks after them (rotation and elastic deformation move a polygon's extent off its box's).

Written here because no maintained library does it inside Detectron2's transform protocol
(``get_transform`` samples, the ``Transform`` applies the same draw to image, polygons and
boxes): MONAI's and TorchIO's random intensity and elastic transforms sample inside their own
call on channel-first tensors and cannot move polygons.
"""

from __future__ import annotations

import copy

from tumor_det.data.validation import components, mask_to_polygons

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, polygons_to_bitmask
from fvcore.transforms.transform import Transform
from scipy import ndimage

__all__ = ["ElasticTransform", "RandomBiasField", "RandomElastic", "RandomGamma",
           "RandomNoise", "TumorDatasetMapper", "build_train_augmentation", "copy_paste"]

#: A pasted tumor lands on a pixel brighter than this fraction of the slice's maximum (inside
#: the head, not in the air around it).
HEAD_FRACTION = 0.1


class _IntensityTransform(Transform):
    """A pixel-wise change of intensities on a 0-255 image; geometry is untouched."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.clip(self.fn(img.astype(np.float32)), 0, 255)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return T.NoOpTransform()


class RandomGamma(T.Augmentation):
    """``255 (I / 255) ** gamma``, gamma log-uniform in ``[low, high]``."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        gamma = float(np.exp(np.random.uniform(np.log(self.low), np.log(self.high))))
        return _IntensityTransform(lambda img: 255.0 * (img / 255.0) ** gamma)


class RandomBiasField(T.Augmentation):
    """A smooth multiplicative field ``exp(p(x, y))`` (MRI coil inhomogeneity); ``p`` is a
    polynomial of ``degree`` in coordinates scaled to [-1, 1], coefficients uniform in
    ``[-coefficient, coefficient]`` (MONAI's ``RandBiasField`` model)."""

    def __init__(self, coefficient: float, degree: int = 3):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        y, x = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32),
                           np.linspace(-1, 1, w, dtype=np.float32), indexing="ij")
        log_field = np.zeros((h, w), np.float32)
        for i in range(self.degree + 1):
            for j in range(self.degree + 1 - i):
                log_field += np.random.uniform(-self.coefficient, self.coefficient) * x**i * y**j
        field = np.exp(log_field)
        return _IntensityTransform(
            lambda img: img * (field[..., None] if img.ndim == 3 else field))


class RandomNoise(T.Augmentation):
    """Additive Gaussian noise, standard deviation uniform in ``[0, max_std]`` x 255."""

    def __init__(self, max_std: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        std = np.random.uniform(0, self.max_std) * 255.0
        noise = np.random.normal(0.0, std, image.shape[:2]).astype(np.float32)
        return _IntensityTransform(
            lambda img: img + (noise[..., None] if img.ndim == 3 else noise))


class ElasticTransform(Transform):
    """Resample with a displacement field: ``out(p) = in(p + d(p))`` (``dx``, ``dy``: H x W).

    Points move by the first-order inverse, ``p - d(p)``, which is close for the smooth, small
    fields :class:`RandomElastic` draws; boxes should be recomputed from the moved polygons.
    """

    def __init__(self, dx: np.ndarray, dy: np.ndarray):
        super().__init__()
        self._set_attributes(locals())

    def _warp(self, img: np.ndarray, order: int) -> np.ndarray:
        h, w = self.dx.shape
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
        grid = [rows + self.dy, cols + self.dx]
        if img.ndim == 2:
            return ndimage.map_coordinates(img, grid, order=order, mode="constant")
        return np.stack([ndimage.map_coordinates(img[..., c], grid, order=order, mode="constant")
                         for c in range(img.shape[2])], axis=-1)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._warp(img, order=1)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._warp(segmentation, order=0)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        h, w = self.dx.shape
        cols = np.clip(np.round(coords[:, 0]).astype(int), 0, w - 1)
        rows = np.clip(np.round(coords[:, 1]).astype(int), 0, h - 1)
        moved = coords.astype(np.float32, copy=True)
        moved[:, 0] -= self.dx[rows, cols]
        moved[:, 1] -= self.dy[rows, cols]
        return moved

    def inverse(self) -> Transform:
        return ElasticTransform(-self.dx, -self.dy)


class RandomElastic(T.Augmentation):
    """Elastic deformation (Simard et al. 2003) with probability ``prob``: white noise smoothed
    by a Gaussian of ``sigma`` px, scaled so the largest displacement is ``alpha`` px."""

    def __init__(self, prob: float, alpha: float, sigma: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if np.random.uniform() >= self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        fields = []
        for _ in range(2):
            field = ndimage.gaussian_filter(np.random.uniform(-1, 1, (h, w)), self.sigma)
            fields.append((field * self.alpha / max(np.abs(field).max(), 1e-8)).astype(np.float32))
        return ElasticTransform(*fields)


def build_train_augmentation(cfg: CfgNode) -> list[T.Augmentation]:
    """Resize (or large scale jitter), flip, then the ``TUMOR.AUGMENT`` geometry and intensity
    changes that are on."""
    aug = cfg.TUMOR.AUGMENT
    if aug.LSJ.ENABLED:
        size = aug.LSJ.SIZE
        augs = [T.ResizeScale(aug.LSJ.MIN_SCALE, aug.LSJ.MAX_SCALE, size, size),
                T.FixedSizeCrop((size, size), pad_value=0.0)]
    else:
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                     cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    if aug.ROTATION > 0:
        augs.append(T.RandomRotation([-aug.ROTATION, aug.ROTATION], expand=False))
    if aug.ELASTIC.PROB > 0:
        augs.append(RandomElastic(aug.ELASTIC.PROB, aug.ELASTIC.ALPHA, aug.ELASTIC.SIGMA))
    if tuple(aug.BRIGHTNESS) != (1.0, 1.0):
        augs.append(T.RandomBrightness(*aug.BRIGHTNESS))
    if tuple(aug.CONTRAST) != (1.0, 1.0):
        augs.append(T.RandomContrast(*aug.CONTRAST))
    if tuple(aug.GAMMA) != (1.0, 1.0):
        augs.append(RandomGamma(*aug.GAMMA))
    if aug.BIAS_FIELD > 0:
        augs.append(RandomBiasField(aug.BIAS_FIELD))
    if aug.NOISE_STD > 0:
        augs.append(RandomNoise(aug.NOISE_STD))
    return augs


# --- Simple Copy-Paste ----------------------------------------------------------------------


def _instance_masks(annos: list[dict], height: int, width: int) -> list[np.ndarray]:
    """Each annotation's polygon mask as a boolean array."""
    return [polygons_to_bitmask(a["segmentation"], height, width) for a in annos]


def _annotation(mask: np.ndarray, category_id: int) -> dict | None:
    """A polygon annotation of ``mask`` (None when nothing of it is left)."""
    polygons, _ = mask_to_polygons(mask)
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return None
    rows, cols = np.nonzero(mask)
    box = [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]
    return {"segmentation": polygons, "bbox": box, "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": category_id, "iscrowd": 0}


def copy_paste(image: np.ndarray, annos: list[dict], source: np.ndarray,
               source_annos: list[dict], scale: tuple[float, float] = (0.75, 1.25),
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, list[dict]]:
    """Paste the tumors of ``source`` into ``image`` (Simple Copy-Paste, Ghiasi et al. 2021).

    The source's instances (polygon annotations) are cut out with their bounding box, rescaled
    by a factor drawn in ``scale``, flipped left-right half of the time and pasted (mask pixels
    only) with their centre on a random pixel of the head (brighter than :data:`HEAD_FRACTION`
    of ``image``'s maximum). ``annos`` lose what the pasted tumors cover (an instance wholly
    covered is dropped). Returns the new image and annotations (polygons, ``XYXY_ABS`` boxes).
    """
    rng = rng or np.random.default_rng(np.random.randint(2**31))
    height, width = image.shape[:2]
    source_annos = [a for a in source_annos if a.get("iscrowd", 0) == 0 and a.get("segmentation")]
    if not source_annos or not isinstance(source_annos[0]["segmentation"], list):
        return image, annos
    masks = _instance_masks(source_annos, *source.shape[:2])
    union = np.any(masks, axis=0)
    if not union.any():
        return image, annos
    rows, cols = np.nonzero(union)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    factor = float(rng.uniform(*scale))
    patch_h = max(1, min(height, round((bottom - top) * factor)))
    patch_w = max(1, min(width, round((right - left) * factor)))
    zoom = (patch_h / (bottom - top), patch_w / (right - left))
    patch = source[top:bottom, left:right].astype(np.float32)
    patch = np.stack([ndimage.zoom(patch[..., c], zoom, order=1) for c in range(patch.shape[2])],
                     axis=-1) if patch.ndim == 3 else ndimage.zoom(patch, zoom, order=1)
    patch_masks = [ndimage.zoom(m[top:bottom, left:right].astype(np.uint8), zoom, order=0) > 0
                   for m in masks]
    patch_h, patch_w = patch_masks[0].shape
    if rng.uniform() < 0.5:
        patch, patch_masks = patch[:, ::-1], [m[:, ::-1] for m in patch_masks]

    gray = image.mean(axis=2) if image.ndim == 3 else image
    head = np.argwhere(gray > HEAD_FRACTION * max(float(gray.max()), 1.0))
    if len(head) == 0:
        return image, annos
    cy, cx = head[rng.integers(len(head))]
    y0 = int(np.clip(cy - patch_h // 2, 0, height - patch_h))
    x0 = int(np.clip(cx - patch_w // 2, 0, width - patch_w))

    pasted = [np.zeros((height, width), bool) for _ in patch_masks]
    for full, m in zip(pasted, patch_masks, strict=True):
        full[y0:y0 + patch_h, x0:x0 + patch_w] = m
    cover = np.any(pasted, axis=0)
    out = image.copy()
    region = out[y0:y0 + patch_h, x0:x0 + patch_w]
    region[cover[y0:y0 + patch_h, x0:x0 + patch_w]] = patch[
        cover[y0:y0 + patch_h, x0:x0 + patch_w]].astype(image.dtype)

    kept = []
    for anno, mask in zip(annos, _instance_masks(annos, height, width), strict=True):
        if not (mask & cover).any():
            kept.append(anno)
            continue
        for part in components(mask & ~cover):
            new = _annotation(part, anno["category_id"])
            if new is not None:
                kept.append(new)
    for anno, mask in zip(source_annos, pasted, strict=True):
        for part in components(mask):
            new = _annotation(part, anno["category_id"])
            if new is not None:
                kept.append(new)
    return out, kept


class TumorDatasetMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` (training) with Simple Copy-Paste from ``sources``
    (dataset dicts with polygon annotations) with probability ``copy_paste_prob`` before the
    augmentations, and boxes recomputed from the masks after them."""

    def __init__(self, cfg: CfgNode, augmentations: list[T.Augmentation],
                 sources: list[dict] | None = None):
        super().__init__(cfg, is_train=True, augmentations=augmentations)
        self.recompute_from_masks = cfg.MODEL.MASK_ON
        self.copy_paste_prob = cfg.TUMOR.AUGMENT.COPY_PASTE.PROB
        self.copy_paste_scale = tuple(cfg.TUMOR.AUGMENT.COPY_PASTE.SCALE)
        self.sources = [d for d in sources or [] if d.get("annotations")]

    def __call__(self, dataset_dict: dict) -> dict:
        # DatasetMapper.__call__ (image and instance annotations only) with Copy-Paste between
        # reading the image and augmenting it.
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        if (self.sources and np.random.uniform() < self.copy_paste_prob
                and all(a.get("segmentation") for a in dataset_dict.get("annotations", []))):
            source = self.sources[np.random.randint(len(self.sources))]
            source_image = utils.read_image(source["file_name"], format=self.image_format)
            image, dataset_dict["annotations"] = copy_paste(
                image, dataset_dict.get("annotations", []), source_image,
                source["annotations"], self.copy_paste_scale)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "annotations" in dataset_dict:
            # recompute only where there are masks (a tumor-free slice has none)
            self.recompute_boxes = self.recompute_from_masks and any(
                a.get("segmentation") for a in dataset_dict["annotations"])
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict

    def _transform_annotations(self, dataset_dict: dict, transforms, image_shape) -> None:
        # DatasetMapper._transform_annotations, with box-only instances (mixed supervision):
        # an annotation without "segmentation" gets its box as a placeholder polygon and
        # ``gt_has_mask`` False, so TumorMaskHead leaves it out of the mask loss.
        annos = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        has_mask = [bool(a.get("segmentation")) for a in annos]
        for anno, outlined in zip(annos, has_mask, strict=True):
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            elif not outlined:
                anno["segmentation"] = [box_polygon(anno["bbox"], anno["bbox_mode"])]
            anno.pop("keypoints", None)
        annos = [utils.transform_instance_annotations(a, transforms, image_shape) for a in annos]
        instances = utils.annotations_to_instances(annos, image_shape,
                                                   mask_format=self.instance_mask_format)
        if self.use_instance_mask and not all(has_mask):
            instances.gt_has_mask = torch.tensor(has_mask, dtype=torch.bool)
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)


def box_polygon(bbox, bbox_mode) -> list[float]:
    """The rectangle of ``bbox`` as a flat polygon (XYXY corners, clockwise)."""
    x0, y0, x1, y1 = BoxMode.convert(list(bbox), bbox_mode, BoxMode.XYXY_ABS)
    return [x0, y0, x1, y0, x1, y1, x0, y1]
