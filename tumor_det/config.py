"""tumor-det's config keys (``cfg.TUMOR``) and helpers to build a config from a YAML file."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

logger = logging.getLogger(__name__)

#: The repository's ``configs/`` folder (the package is installed editable, ``pip install -e .``).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "quick_cpu.yaml"


def add_tumor_config(cfg: CN) -> None:
    """Add tumor-det's keys to a Detectron2 config, in the way of Detectron2's ``projects/``."""
    cfg.TUMOR = CN()
    # Where datasets prepared by tools/prepare_dataset.py live ("" = $TUMOR_DET_DATASETS or
    # ./datasets). Each <root>/<name>/annotations/<split>.json is registered as "<name>_<split>".
    cfg.TUMOR.DATASETS_ROOT = ""
    # Percentiles of the intensity window for non-8-bit images (tumor_det.intensity).
    cfg.TUMOR.INTENSITY_PERCENTILES = (0.5, 99.5)

    # Training augmentation on top of Detectron2's resize and flip (0 / (1, 1) = off).
    cfg.TUMOR.AUGMENT = CN()
    cfg.TUMOR.AUGMENT.ROTATION = 0.0  # degrees, uniform in [-R, R]
    cfg.TUMOR.AUGMENT.BRIGHTNESS = (1.0, 1.0)
    cfg.TUMOR.AUGMENT.CONTRAST = (1.0, 1.0)

    cfg.TUMOR.EVAL = CN()
    # Instances with a score below this are ignored by the tumor metrics (COCO AP uses them all).
    cfg.TUMOR.EVAL.SCORE_THRESHOLD = 0.5
    # A ground-truth lesion counts as found when a prediction overlaps it with at least this IoU.
    cfg.TUMOR.EVAL.LESION_IOU = 0.1
    # Pixel spacing in mm used when a dataset record does not carry "pixel_spacing" (0 = unknown:
    # distances are then reported in pixels).
    cfg.TUMOR.EVAL.PIXEL_SPACING_MM = 0.0
    # Also run Detectron2's COCOEvaluator (box and mask AP).
    cfg.TUMOR.EVAL.COCO = True

    # Keep model_best.pth by this metric of the periodic evaluation ("" = off).
    cfg.TUMOR.BEST_METRIC = "tumor/dice"
    cfg.TUMOR.BEST_MODE = "max"
    # Compute the loss on DATASETS.TEST every N iterations (0 = off).
    cfg.TUMOR.VAL_LOSS_PERIOD = 0


def get_tumor_cfg(config_file: str | Path | None = None, opts: list[str] | None = None) -> CN:
    """Return Detectron2's defaults + ``cfg.TUMOR``, merged with ``config_file`` and ``opts``.

    Unknown keys in the file or in ``opts`` raise a ``KeyError`` naming the key (yacs).
    """
    cfg = get_cfg()
    add_tumor_config(cfg)
    path = Path(config_file) if config_file else DEFAULT_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    cfg.merge_from_file(str(path))
    if opts:
        cfg.merge_from_list(list(opts))
    return cfg


def resolve_device(cfg: CN) -> None:
    """Use the CPU when the config asks for CUDA and no GPU is present (logged)."""
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %r but CUDA is not available: using the CPU",
                       cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
