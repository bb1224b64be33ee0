"""Detectron2's second config system: LazyConfig Python configs with hydra ``key=value`` overrides.

A LazyConfig (``configs/lazy/*.py``, or the ``config.yaml`` that ``LazyConfig.save`` writes
into a run's output folder) describes the same objects as a YACS config, in Detectron2's
``new_baselines`` shape: ``model`` (a ``LazyCall`` of ``TumorRCNN``),
``dataloader.{train,test,evaluator}``, ``optimizer``, ``lr_multiplier``, ``train`` and, for
tumor-det's own settings, ``tumor``. :mod:`tumor_det.engine.lazy_train` trains it.

Every other tool runs on a YACS ``CfgNode`` (Detectron2's ``DefaultPredictor`` shape):
:func:`to_cfgnode` turns a LazyConfig into the equivalent ``CfgNode`` (architecture keys, input
sizes and format, thresholds, classes, weights, datasets, ``TUMOR`` keys), such that
``build_model`` of it has the same parameters, with the same names and shapes, as
``instantiate(cfg.model)``: a checkpoint trained through either front end loads into the other.
:func:`load_config` is the one entry point: a YAML file goes through
:func:`~tumor_det.config.config.get_tumor_cfg`, a ``.py`` or LazyConfig-saved YAML through here.

The mapping of ``dataloader.train`` / ``dataloader.evaluator`` arguments onto YACS keys
(:func:`train_loader_cfg`, :func:`evaluator_cfg`) is also what the lazy training builders use,
so both front ends feed the same mapper, augmentation and evaluator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tumor_det.config.config import (
    ConfigError,
    ConfigFileNotFoundError,
    add_tumor_config,
    config_dir,
    get_config_file,
    get_tumor_cfg,
)

import yaml
from detectron2.config import CfgNode, LazyConfig, get_cfg
from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["apply_overrides", "evaluator_cfg", "get_lazy_config_file", "is_lazy_config",
           "list_lazy_configs", "load_config", "load_lazy_config", "split_opts", "to_cfgnode",
           "train_loader_cfg"]

_MISSING = object()


# --- files ------------------------------------------------------------------------------------


def list_lazy_configs() -> list[str]:
    """The built-in LazyConfigs, as ``lazy/<name>.py``."""
    return sorted(f"lazy/{p.name}" for p in (config_dir() / "lazy").glob("*.py")
                  if not p.name.startswith("_"))


def get_lazy_config_file(name: str | os.PathLike) -> Path:
    """A LazyConfig by path, or a built-in one by name (``lazy/quick_cpu.py``,
    ``lazy/quick_cpu``, ``configs/lazy/quick_cpu.py``); raises :class:`ConfigFileNotFoundError`."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = path.name if path.suffix == ".py" else f"{path.name}.py"
    builtin = config_dir() / "lazy" / stem
    if path.parent in (Path("lazy"), Path("configs/lazy"), Path(".")) and builtin.is_file():
        return builtin
    raise ConfigFileNotFoundError(f"config file not found: {name} (built-in LazyConfigs: "
                                  f"{', '.join(list_lazy_configs())})")


def _is_lazy_name(name: str | os.PathLike) -> bool:
    path = Path(name)
    return path.suffix == ".py" or path.parent.name == "lazy"


def is_lazy_config(path: str | os.PathLike) -> bool:
    """True for a ``.py`` config, or a YAML file written by ``LazyConfig.save`` (a ``model``
    with a ``_target_``) rather than a YACS config."""
    path = Path(path)
    if path.suffix == ".py":
        return True
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        data = yaml.unsafe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model"), dict) and \
        "_target_" in data["model"]


# --- loading and overrides --------------------------------------------------------------------


def split_opts(opts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split command-line overrides into hydra ``key=value`` ones and YACS ``KEY VALUE`` pairs
    (a token with ``=`` where a YACS key would stand is a hydra override)."""
    hydra, yacs = [], []
    items = list(opts)
    i = 0
    while i < len(items):
        if "=" in items[i]:
            hydra.append(items[i])
            i += 1
        elif i + 1 < len(items):
            yacs += items[i:i + 2]
            i += 2
        else:
            raise ConfigError(f"config override {items[i]!r} has no value (key=value, or "
                              "KEY VALUE for the derived YACS config)")
    return hydra, yacs


def _same_kind(old: Any, new: Any) -> bool:
    """Whether an override's value may replace the current one (ints widen to floats;
    ``None`` and interpolations accept anything)."""
    if old is None or new is None or isinstance(old, str) and old.startswith("${"):
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)):
        return isinstance(new, (int, float)) and not (isinstance(old, int)
                                                     and isinstance(new, float))
    if isinstance(old, str):
        return isinstance(new, str)
    if isinstance(old, (ListConfig, list, tuple)):
        return isinstance(new, (list, tuple))
    return True


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``LazyConfig.apply_overrides`` (hydra's grammar), refusing keys that do not exist
    (``+key=value`` adds one) and values of another kind than the current one; raises
    :class:`ConfigError` with one line."""
    if not overrides:
        return cfg
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"config override: {_one_line(exc)}") from exc
    for override in parsed:
        key = override.key_or_group
        if override.is_delete():
            raise ConfigError(f"config override ~{key}: deleting keys is not supported")
        old = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if old is _MISSING and override.type != OverrideType.ADD:
            raise ConfigError(f"config override {key}: unknown key (+{key}=... adds one)")
        value = override.value()
        if old is not _MISSING and not OmegaConf.is_config(old) and not _same_kind(old, value):
            raise ConfigError(f"config override {key}={override.get_value_element_as_str()}: "
                              f"expected a value like {old!r}")
    try:
        LazyConfig.apply_overrides(cfg, [o.input_line for o in parsed])
    except Exception as exc:  # omegaconf/hydra errors, KeyError of a non-config prefix
        raise ConfigError(f"config override: {_one_line(exc)}") from exc
    return cfg


def load_lazy_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """``LazyConfig.load`` of a ``.py`` or LazyConfig-saved YAML (path or built-in name),
    then :func:`apply_overrides`; raises :class:`ConfigError` with one line."""
    file = get_lazy_config_file(path) if Path(path).suffix != ".yaml" else Path(path)
    if not file.is_file():
        raise ConfigFileNotFoundError(f"config file not found: {path}")
    try:
        cfg = LazyConfig.load(str(file))
    except FileNotFoundError as exc:
        raise ConfigFileNotFoundError(f"{file}: config file not found: {exc.filename or exc}"
                                      ) from exc
    except Exception as exc:  # a syntax or import error in the config's own code
        raise ConfigError(f"{file}: {type(exc).__name__}: {_one_line(exc)}") from exc
    if "model" not in cfg:
        raise ConfigError(f"{file}: not a LazyConfig (no 'model')")
    return apply_overrides(cfg, overrides)


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def load_config(path: str | os.PathLike | None, opts: Sequence[str] = ()) -> CfgNode:
    """The YACS config of any config file: the one call every tool makes.

    A YAML config (path or built-in name) is :func:`get_tumor_cfg` with ``KEY VALUE`` ``opts``;
    a ``.py`` (``lazy/<name>.py`` for a built-in) or a LazyConfig-saved ``config.yaml`` is
    loaded with its hydra ``key=value`` overrides and turned into the equivalent ``CfgNode``
    (:func:`to_cfgnode`), to which ``KEY VALUE`` pairs among ``opts`` then apply. Raises
    :class:`ConfigError` with one line.
    """
    if path is None or not (_is_lazy_name(path) or is_lazy_config(_existing(path))):
        return get_tumor_cfg(path, list(opts))
    hydra, yacs = split_opts(opts)
    cfg = to_cfgnode(load_lazy_config(path, hydra))
    if yacs:
        try:
            cfg.merge_from_list(yacs)
        except (KeyError, ValueError, AssertionError, TypeError) as exc:
            raise ConfigError(f"config override: {_one_line(exc)}") from exc
    return cfg


def _existing(path: str | os.PathLike) -> Path:
    try:
        return get_config_file(path)
    except ConfigError:
        return Path(path)


# --- LazyConfig -> CfgNode --------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """An omegaconf container as Python lists/dicts (tuples stay tuples)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _upper(tree: Mapping) -> CfgNode:
    """``{"lsj": {"enabled": True}}`` -> ``CfgNode(LSJ=CfgNode(ENABLED=True))``."""
    out = CfgNode()
    for key, value in _plain(tree).items():
        out[key.upper()] = _upper(value) if isinstance(value, Mapping) else (
            tuple(value) if isinstance(value, list) else value)
    return out


def _merge(node: CfgNode, tree: Mapping, where: str) -> None:
    try:
        node.merge_from_other_cfg(_upper(tree))
    except (KeyError, ValueError, AssertionError, TypeError) as exc:
        raise ConfigError(f"{where}: {_one_line(exc)}") from exc


def _base_cfg() -> CfgNode:
    cfg = get_cfg()
    add_tumor_config(cfg)
    return cfg


def _names(names: str | Sequence[str]) -> tuple[str, ...]:
    names = _plain(names)
    return (names,) if isinstance(names, str) else tuple(names)


def train_loader_cfg(cfg: CfgNode | None = None, *, names: str | Sequence[str],
                     total_batch_size: int, num_workers: int = 0, filter_empty: bool = False,
                     dataset_weights: Sequence[float] = (), mask_on: bool = True,
                     input: Mapping | None = None, augment: Mapping | None = None) -> CfgNode:
    """The YACS keys of ``dataloader.train`` (the arguments of
    :func:`tumor_det.engine.lazy_train.build_train_loader`) set on ``cfg`` (default: a fresh
    tumor-det config), which is returned.

    ``input`` holds ``INPUT`` keys and ``augment`` ``TUMOR.AUGMENT`` keys, lower case
    (``min_size_train``, ``lsj.enabled``, ...); unknown keys raise :class:`ConfigError`.
    """
    cfg = cfg if cfg is not None else _base_cfg()
    cfg.DATASETS.TRAIN = _names(names)
    cfg.SOLVER.IMS_PER_BATCH = int(total_batch_size)
    cfg.DATALOADER.NUM_WORKERS = int(num_workers)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = bool(filter_empty)
    cfg.TUMOR.DATASET_WEIGHTS = tuple(_plain(dataset_weights))
    cfg.MODEL.MASK_ON = bool(mask_on)
    _merge(cfg.INPUT, input or {}, "dataloader.train.input")
    _merge(cfg.TUMOR.AUGMENT, augment or {}, "dataloader.train.augment")
    return cfg


def evaluator_cfg(cfg: CfgNode | None = None, *, score_threshold: float = 0.5,
                  lesion_iou: float = 0.1, pixel_spacing_mm: float = 0.0, coco: bool = True,
                  **_: Any) -> CfgNode:
    """The ``TUMOR.EVAL`` keys of ``dataloader.evaluator`` set on ``cfg``, which is returned."""
    cfg = cfg if cfg is not None else _base_cfg()
    _merge(cfg.TUMOR.EVAL, dict(score_threshold=score_threshold, lesion_iou=lesion_iou,
                                pixel_spacing_mm=pixel_spacing_mm, coco=coco),
           "dataloader.evaluator")
    return cfg


def _target(node: Any) -> str:
    """The ``_target_`` of a LazyCall node as ``module.Name`` (also when already a class)."""
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if target is None:
        return ""
    if isinstance(target, str):
        return target
    return f"{target.__module__}.{target.__qualname__}"


def _short(node: Any) -> str:
    return _target(node).rsplit(".", 1)[-1]


def _expect(node: Any, names: Sequence[str], where: str) -> None:
    if _short(node) not in names:
        raise ConfigError(f"{where}: {_target(node) or 'missing'} has no YACS equivalent "
                          f"(expected {' or '.join(names)}); tools other than "
                          "lazyconfig_train_net.py cannot use this config")


def _get(node: Mapping, key: str, default: Any) -> Any:
    value = node.get(key, default) if node is not None else default
    return default if value is None and default is not None else _plain(value)


def _uniform(dims: Sequence[int], where: str) -> int:
    if len(set(dims)) > 1:
        raise ConfigError(f"{where}: layers of different widths {list(dims)} have no YACS "
                          "equivalent")
    return int(dims[0]) if dims else 0


def _channels(shape: Any, default: int) -> int:
    shape = _plain(shape)
    if isinstance(shape, Mapping):
        return int(shape.get("channels", default))
    return int(getattr(shape, "channels", default) or default)


def _model_cfg(cfg: CfgNode, model: DictConfig) -> None:  # noqa: PLR0915 (one key per line)
    """``MODEL``/``INPUT.FORMAT``/``TEST.DETECTIONS_PER_IMAGE``/``TUMOR.MERGE`` of ``model``."""
    m = cfg.MODEL
    _expect(model, ["TumorRCNN", "GeneralizedRCNN"], "model")
    m.META_ARCHITECTURE = _short(model)
    m.PIXEL_MEAN = list(_get(model, "pixel_mean", m.PIXEL_MEAN))
    m.PIXEL_STD = list(_get(model, "pixel_std", m.PIXEL_STD))
    cfg.INPUT.FORMAT = _get(model, "input_format", cfg.INPUT.FORMAT)
    cfg.VIS_PERIOD = int(_get(model, "vis_period", 0))
    if _short(model) == "TumorRCNN":
        merge = cfg.TUMOR.MERGE
        merge.ENABLED = bool(_get(model, "merge_enabled", True))
        merge.IOU = float(_get(model, "merge_iou", 0.5))
        merge.CONTAINMENT = float(_get(model, "merge_containment", 0.8))
        merge.MASK = _get(model, "merge_mask", "best")

    fpn = model.backbone
    _expect(fpn, ["FPN"], "model.backbone")
    _expect(fpn.get("top_block"), ["LastLevelMaxPool"], "model.backbone.top_block")
    resnet = fpn.bottom_up
    _expect(resnet, ["ResNet"], "model.backbone.bottom_up")
    stages = resnet.stages
    _expect(stages, ["make_default_stages"], "model.backbone.bottom_up.stages")
    stem = resnet.stem
    _expect(stem, ["BasicStem"], "model.backbone.bottom_up.stem")
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.BACKBONE.FREEZE_AT = int(_get(resnet, "freeze_at", 0))
    r = m.RESNETS
    r.DEPTH = int(stages.depth)
    r.NORM = _get(stages, "norm", "BN")
    if _get(stem, "norm", "BN") != r.NORM:
        raise ConfigError(f"model.backbone.bottom_up: stem norm {_get(stem, 'norm', 'BN')!r} "
                          f"and stages norm {r.NORM!r} differ (YACS has one RESNETS.NORM)")
    r.STEM_OUT_CHANNELS = int(_get(stem, "out_channels", 64))
    r.STRIDE_IN_1X1 = bool(_get(stages, "stride_in_1x1", True))
    r.RES2_OUT_CHANNELS = 64 if r.DEPTH < 50 else 256
    r.NUM_GROUPS, r.WIDTH_PER_GROUP = 1, 64
    r.OUT_FEATURES = list(_get(resnet, "out_features", r.OUT_FEATURES))
    for key in ("block_class", "deform_on_per_stage", "dilation"):
        if stages.get(key) is not None:
            raise ConfigError(f"model.backbone.bottom_up.stages.{key} has no YACS equivalent")
    m.FPN.IN_FEATURES = list(_get(fpn, "in_features", r.OUT_FEATURES))
    m.FPN.OUT_CHANNELS = int(fpn.out_channels)
    m.FPN.NORM = _get(fpn, "norm", "")
    m.FPN.FUSE_TYPE = _get(fpn, "fuse_type", "sum")

    rpn = model.proposal_generator
    _expect(rpn, ["RPN"], "model.proposal_generator")
    _expect(rpn.head, ["StandardRPNHead"], "model.proposal_generator.head")
    anchors = rpn.anchor_generator
    _expect(anchors, ["DefaultAnchorGenerator"], "model.proposal_generator.anchor_generator")
    sizes = _get(anchors, "sizes", None)
    ratios = _get(anchors, "aspect_ratios", [0.5, 1.0, 2.0])
    m.ANCHOR_GENERATOR.SIZES = [list(s) if isinstance(s, (list, tuple)) else [s] for s in sizes]
    m.ANCHOR_GENERATOR.ASPECT_RATIOS = (ratios if isinstance(ratios[0], (list, tuple))
                                        else [ratios])
    m.ANCHOR_GENERATOR.OFFSET = float(_get(anchors, "offset", 0.0))
    p = m.RPN
    p.HEAD_NAME = "StandardRPNHead"
    p.CONV_DIMS = list(_get(rpn.head, "conv_dims", [-1]))
    p.IN_FEATURES = list(rpn.in_features)
    p.PRE_NMS_TOPK_TRAIN, p.PRE_NMS_TOPK_TEST = _get(rpn, "pre_nms_topk", None)
    p.POST_NMS_TOPK_TRAIN, p.POST_NMS_TOPK_TEST = _get(rpn, "post_nms_topk", None)
    p.NMS_THRESH = float(_get(rpn, "nms_thresh", 0.7))
    p.BATCH_SIZE_PER_IMAGE = int(_get(rpn, "batch_size_per_image", 256))
    p.POSITIVE_FRACTION = float(_get(rpn, "positive_fraction", 0.5))
    p.IOU_THRESHOLDS = list(_get(rpn.anchor_matcher, "thresholds", p.IOU_THRESHOLDS))
    p.IOU_LABELS = list(_get(rpn.anchor_matcher, "labels", p.IOU_LABELS))
    p.BBOX_REG_WEIGHTS = tuple(_get(rpn.box2box_transform, "weights", p.BBOX_REG_WEIGHTS))

    roi = model.roi_heads
    _expect(roi, ["StandardROIHeads"], "model.roi_heads")
    h = m.ROI_HEADS
    h.NAME = "StandardROIHeads"
    h.NUM_CLASSES = int(roi.num_classes)
    h.IN_FEATURES = list(roi.box_in_features)
    h.BATCH_SIZE_PER_IMAGE = int(_get(roi, "batch_size_per_image", 512))
    h.POSITIVE_FRACTION = float(_get(roi, "positive_fraction", 0.25))
    h.PROPOSAL_APPEND_GT = bool(_get(roi, "proposal_append_gt", True))
    h.IOU_THRESHOLDS = list(_get(roi.proposal_matcher, "thresholds", h.IOU_THRESHOLDS))
    h.IOU_LABELS = list(_get(roi.proposal_matcher, "labels", h.IOU_LABELS))
    predictor = roi.box_predictor
    _expect(predictor, ["FastRCNNOutputLayers"], "model.roi_heads.box_predictor")
    h.SCORE_THRESH_TEST = float(_get(predictor, "test_score_thresh", 0.05))
    h.NMS_THRESH_TEST = float(_get(predictor, "test_nms_thresh", 0.5))
    cfg.TEST.DETECTIONS_PER_IMAGE = int(_get(predictor, "test_topk_per_image", 100))
    b = m.ROI_BOX_HEAD
    b.CLS_AGNOSTIC_BBOX_REG = bool(_get(predictor, "cls_agnostic_bbox_reg", False))
    b.BBOX_REG_WEIGHTS = tuple(_get(predictor.box2box_transform, "weights", b.BBOX_REG_WEIGHTS))
    b.SMOOTH_L1_BETA = float(_get(predictor, "smooth_l1_beta", 0.0))
    box_head = roi.box_head
    _expect(box_head, ["FastRCNNConvFCHead"], "model.roi_heads.box_head")
    b.NAME = "FastRCNNConvFCHead"
    conv_dims, fc_dims = _get(box_head, "conv_dims", []), _get(box_head, "fc_dims", [])
    b.NUM_CONV, b.CONV_DIM = len(conv_dims), _uniform(conv_dims, "box_head.conv_dims") or 256
    b.NUM_FC, b.FC_DIM = len(fc_dims), _uniform(fc_dims, "box_head.fc_dims") or 1024
    b.NORM = _get(box_head, "conv_norm", "")
    pooler = roi.box_pooler
    b.POOLER_RESOLUTION = int(_get(pooler, "output_size", 7))
    b.POOLER_SAMPLING_RATIO = int(_get(pooler, "sampling_ratio", 0))
    b.POOLER_TYPE = _get(pooler, "pooler_type", "ROIAlignV2")
    if _channels(box_head.input_shape, m.FPN.OUT_CHANNELS) != m.FPN.OUT_CHANNELS:
        raise ConfigError("model.roi_heads.box_head.input_shape.channels differs from "
                          "model.backbone.out_channels")

    mask_head = roi.get("mask_head")
    m.MASK_ON = mask_head is not None
    if m.MASK_ON:
        _expect(mask_head, ["TumorMaskHead", "MaskRCNNConvUpsampleHead"],
                "model.roi_heads.mask_head")
        k = m.ROI_MASK_HEAD
        k.NAME = _short(mask_head)
        dims = list(_get(mask_head, "conv_dims", [256] * 5))
        k.NUM_CONV, k.CONV_DIM = len(dims) - 1, _uniform(dims, "mask_head.conv_dims")
        k.NORM = _get(mask_head, "conv_norm", "")
        k.CLS_AGNOSTIC_MASK = int(mask_head.num_classes) == 1 and h.NUM_CLASSES != 1
        pooler = roi.mask_pooler
        k.POOLER_RESOLUTION = int(_get(pooler, "output_size", 14))
        k.POOLER_SAMPLING_RATIO = int(_get(pooler, "sampling_ratio", 0))
        k.POOLER_TYPE = _get(pooler, "pooler_type", "ROIAlignV2")


def _solver_cfg(cfg: CfgNode, lazy: DictConfig) -> None:
    """``SOLVER`` keys of ``optimizer`` and ``lr_multiplier``, when in the usual shape."""
    optimizer = lazy.get("optimizer") or {}
    s = cfg.SOLVER
    s.BASE_LR = float(_get(optimizer, "lr", s.BASE_LR))
    s.MOMENTUM = float(_get(optimizer, "momentum", s.MOMENTUM))
    s.WEIGHT_DECAY = float(_get(optimizer, "weight_decay", s.WEIGHT_DECAY))
    lr = lazy.get("lr_multiplier") or {}
    if _short(lr) == "warmup_multistep":
        s.STEPS = tuple(_get(lr, "steps", s.STEPS))
        s.WARMUP_ITERS = int(_get(lr, "warmup_iters", s.WARMUP_ITERS))
        s.WARMUP_FACTOR = float(_get(lr, "warmup_factor", s.WARMUP_FACTOR))
        s.GAMMA = float(_get(lr, "gamma", s.GAMMA))


def to_cfgnode(lazy: DictConfig) -> CfgNode:
    """The YACS config equivalent to a LazyConfig, for tools built on a ``CfgNode``
    (predictor, splash, export, cross-validation, evaluation).

    ``build_model`` of the result has the parameters of ``instantiate(lazy.model)`` (names and
    shapes: ``tests/test_lazyconfig.py`` checks every shipped config). A model part with no
    YACS equivalent (another backbone, heads of mixed widths) raises :class:`ConfigError`.
    """
    cfg = _base_cfg()
    try:
        _model_cfg(cfg, lazy.model)
        train = lazy.get("train") or {}
        tumor = _plain(lazy.get("tumor") or {})
        loader = lazy.get("dataloader") or {}
        if "train" in loader:
            kwargs = {k: v for k, v in loader.train.items() if k != "_target_"}
            train_loader_cfg(cfg, **kwargs)
        if "test" in loader:
            test = loader.test
            cfg.DATASETS.TEST = _names(test.dataset.names)
            resize = [a for a in _get(test.mapper, "augmentations", [])
                      if _short(a) == "ResizeShortestEdge"]
            if resize:
                size = resize[0]["short_edge_length"]
                cfg.INPUT.MIN_SIZE_TEST = int(size[0] if isinstance(size, list) else size)
                cfg.INPUT.MAX_SIZE_TEST = int(resize[0].get("max_size", cfg.INPUT.MAX_SIZE_TEST))
        if "evaluator" in loader:
            evaluator_cfg(cfg, **{k: v for k, v in loader.evaluator.items() if k != "_target_"})
        cfg.MODEL.WEIGHTS = _get(train, "init_checkpoint", "") or ""
        cfg.MODEL.DEVICE = _get(train, "device", "cuda")
        cfg.OUTPUT_DIR = _get(train, "output_dir", cfg.OUTPUT_DIR)
        cfg.SOLVER.MAX_ITER = int(_get(train, "max_iter", cfg.SOLVER.MAX_ITER))
        cfg.SOLVER.CHECKPOINT_PERIOD = int(_get(_get(train, "checkpointer", {}), "period",
                                                cfg.SOLVER.CHECKPOINT_PERIOD))
        cfg.SOLVER.AMP.ENABLED = bool(_get(_get(train, "amp", {}), "enabled", False))
        cfg.TEST.EVAL_PERIOD = int(_get(train, "eval_period", cfg.TEST.EVAL_PERIOD))
        cfg.SEED = int(_get(train, "seed", cfg.SEED))
        _solver_cfg(cfg, lazy)
        test_aug = tumor.pop("test_aug", None)
        if test_aug:
            _merge(cfg.TEST.AUG, test_aug, "tumor.test_aug")
        _merge(cfg.TUMOR, tumor, "tumor")
    except ConfigError:
        raise
    except Exception as exc:  # a missing node, an interpolation that does not resolve
        raise ConfigError(f"LazyConfig -> YACS: {type(exc).__name__}: {_one_line(exc)}"
                          ) from exc
    return cfg
