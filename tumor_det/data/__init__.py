"""Datasets: registration in Detectron2's catalogs, converters and the synthetic generator."""

from tumor_det.data.catalog import (
    SYNTHETIC_NAME,
    datasets_root,
    register_all,
    register_coco_split,
)

__all__ = ["SYNTHETIC_NAME", "datasets_root", "register_all", "register_coco_split"]
