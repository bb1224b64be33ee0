"""The few settings a report needs from a run's saved Detectron2 ``config.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class RunSettings:
    score_threshold: float = 0.5
    lesion_iou: float = 0.1
    datasets_root: str | None = None


def read_settings(config: Path) -> RunSettings:
    """``TUMOR.EVAL.SCORE_THRESHOLD``, ``TUMOR.EVAL.LESION_IOU``, ``TUMOR.DATASETS_ROOT`` of a
    saved config (defaults when it is missing or unreadable)."""
    try:
        cfg = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return RunSettings()
    tumor = cfg.get("TUMOR", {}) or {}
    ev = tumor.get("EVAL", {}) or {}
    return RunSettings(float(ev.get("SCORE_THRESHOLD", 0.5)), float(ev.get("LESION_IOU", 0.1)),
                       tumor.get("DATASETS_ROOT") or None)
