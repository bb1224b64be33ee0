"""tumor-det's config keys (``cfg.TUMOR``) and helpers to build a config from a YAML file."""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

# Registers TumorRCNN (the base config's MODEL.META_ARCHITECTURE) in every process that makes
# or reads a tumor-det config: the trainer, the predictor, spawned workers.
from tumor_det.modeling import meta_arch  # noqa: F401

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

logger = logging.getLogger(__name__)


class ConfigError(KeyError, ValueError):
    """A config that cannot be used: no such file, an unknown key or a value of the wrong type.

    A ``KeyError`` (yacs' own type for unknown keys) and a ``ValueError``, with a one-line
    message (``str()`` does not add KeyError's quotes).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file (or a ``_BASE_`` it names) does not exist."""


def config_dir() -> Path:
    """The folder of tumor-det's YAML configs.

    The repository's ``configs/`` is installed as the package-data module ``tumor_det.configs``
    (``setup.py``: ``package_dir``), so it is found the same way after ``pip install .`` into
    site-packages and after ``pip install -e .`` (like ``detectron2.model_zoo``'s configs).
    """
    return Path(str(resources.files("tumor_det.configs")))


def list_configs() -> list[str]:
    """The names of the built-in configs (``quick_cpu.yaml``, ...)."""
    return sorted(p.name for p in config_dir().glob("*.yaml"))


def get_config_file(name: str | os.PathLike) -> Path:
    """A config by path, or a built-in one by name (``quick_cpu``, ``quick_cpu.yaml``,
    ``configs/quick_cpu.yaml``), like ``detectron2.model_zoo.get_config_file``.

    An existing path is returned as it is; otherwise the name is looked up among the built-in
    configs. Raises :class:`ConfigError` naming the file and the built-in names.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    builtin = config_dir() / stem
    if path.parent in (Path("."), Path("configs")) and builtin.is_file():
        return builtin
    raise ConfigFileNotFoundError(f"config file not found: {name} (built-in configs: "
                      f"{', '.join(list_configs())})")


DEFAULT_CONFIG = get_config_file("quick_cpu.yaml")


def add_tumor_config(cfg: CN) -> None:
    """Add tumor-det's keys to a Detectron2 config, in the way of Detectron2's ``projects/``."""
    cfg.TUMOR = CN()
    # Where datasets prepared by tools/prepare_dataset.py live ("" = $TUMOR_DET_DATASETS or
    # ./datasets). Each <root>/<name>/annotations/<split>.json is registered as "<name>_<split>".
    cfg.TUMOR.DATASETS_ROOT = ""
    # Percentiles of the intensity window for non-8-bit images (tumor_det.io.intensity).
    cfg.TUMOR.INTENSITY_PERCENTILES = (0.5, 99.5)

    # Training augmentation on top of Detectron2's resize and flip (0 / (1, 1) = off).
    cfg.TUMOR.AUGMENT = CN()
    cfg.TUMOR.AUGMENT.ROTATION = 0.0  # degrees, uniform in [-R, R]
    cfg.TUMOR.AUGMENT.BRIGHTNESS = (1.0, 1.0)
    cfg.TUMOR.AUGMENT.CONTRAST = (1.0, 1.0)
    # MRI intensity augmentation (tumor_det.data.augmentation): gamma drawn log-uniformly in GAMMA;
    # a smooth multiplicative bias field exp(p(x, y)), p a random polynomial of degree 3 with
    # coefficients up to BIAS_FIELD; Gaussian noise of a standard deviation drawn in
    # [0, NOISE_STD] (fraction of the 0-255 range).
    cfg.TUMOR.AUGMENT.GAMMA = (1.0, 1.0)
    cfg.TUMOR.AUGMENT.BIAS_FIELD = 0.0
    cfg.TUMOR.AUGMENT.NOISE_STD = 0.0
    # Elastic deformation with probability PROB: a random displacement field smoothed by a
    # Gaussian of SIGMA px, scaled to at most ALPHA px (Simard et al. 2003).
    cfg.TUMOR.AUGMENT.ELASTIC = CN()
    cfg.TUMOR.AUGMENT.ELASTIC.PROB = 0.0
    cfg.TUMOR.AUGMENT.ELASTIC.ALPHA = 12.0
    cfg.TUMOR.AUGMENT.ELASTIC.SIGMA = 16.0
    # Large scale jitter (Ghiasi et al. 2021) instead of INPUT.MIN_SIZE_TRAIN's resize: scale
    # to SIZE x [MIN_SCALE, MAX_SCALE], then crop or pad to SIZE x SIZE.
    cfg.TUMOR.AUGMENT.LSJ = CN()
    cfg.TUMOR.AUGMENT.LSJ.ENABLED = False
    cfg.TUMOR.AUGMENT.LSJ.SIZE = 256
    cfg.TUMOR.AUGMENT.LSJ.MIN_SCALE = 0.5
    cfg.TUMOR.AUGMENT.LSJ.MAX_SCALE = 2.0
    # Simple Copy-Paste (Ghiasi et al. 2021): with probability PROB, the tumors of another
    # training slice, rescaled by a factor in SCALE and flipped at random, are pasted into the
    # head of this one (occluded parts of its own masks removed).
    cfg.TUMOR.AUGMENT.COPY_PASTE = CN()
    cfg.TUMOR.AUGMENT.COPY_PASTE.PROB = 0.0
    cfg.TUMOR.AUGMENT.COPY_PASTE.SCALE = (0.75, 1.25)

    # One sampling weight per DATASETS.TRAIN name: each dataset's share of the sampled images
    # (tumor_det.data.sampling; () = Detectron2's default, every image alike).
    cfg.TUMOR.DATASET_WEIGHTS = ()

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

    # One tumor, one detection: TumorRCNN (and its TTA) merge detections class-agnostically
    # when their masks overlap with IoU >= IOU or the smaller lies >= CONTAINMENT inside the
    # other (tumor_det.modeling.postprocessing.merge_instances).
    cfg.TUMOR.MERGE = CN()
    cfg.TUMOR.MERGE.ENABLED = True
    cfg.TUMOR.MERGE.IOU = 0.5
    cfg.TUMOR.MERGE.CONTAINMENT = 0.8
    # The merged detection's mask: "best" (the highest-scoring member's own: never grows a
    # tumor) or "union" (the members' union, the rule before 0.2).
    cfg.TUMOR.MERGE.MASK = "best"


def get_tumor_cfg(config_file: str | Path | None = None, opts: list[str] | None = None) -> CN:
    """Return Detectron2's defaults + ``cfg.TUMOR``, merged with ``config_file`` and ``opts``.

    ``config_file`` is a path or a built-in config's name (:func:`get_config_file`). A missing
    file, an unknown key or a value of the wrong type in the file or in ``opts`` (``KEY VALUE``
    pairs) raise :class:`ConfigError` with a one-line message naming the file or key.
    """
    cfg = get_cfg()
    add_tumor_config(cfg)
    path = get_config_file(config_file) if config_file else DEFAULT_CONFIG
    try:
        cfg.merge_from_file(str(path))
    except (KeyError, ValueError, AssertionError, TypeError) as exc:
        raise ConfigError(f"{path}: {_yacs_message(exc)}") from exc
    except FileNotFoundError as exc:  # a missing _BASE_ file
        raise ConfigFileNotFoundError(f"{path}: config file not found: {exc.filename or exc}"
                                      ) from exc
    if opts:
        opts = list(opts)
        if len(opts) % 2:
            raise ConfigError(f"config overrides must be KEY VALUE pairs, got {opts}")
        try:
            cfg.merge_from_list(opts)
        except (KeyError, ValueError, AssertionError, TypeError) as exc:
            raise ConfigError(f"config override: {_yacs_message(exc)}") from exc
    return cfg


def _yacs_message(exc: BaseException) -> str:
    """yacs' error as one line: it raises KeyError (file), AssertionError (``merge_from_list``)
    or ValueError (type mismatch), some with multi-line messages."""
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return " ".join(text.split())


def resolve_device(cfg: CN) -> None:
    """Use the CPU when the config asks for CUDA and no GPU is present (logged)."""
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %r but CUDA is not available: using the CPU",
                       cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
