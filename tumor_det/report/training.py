"""Training and validation curves from Detectron2's ``metrics.json`` (one JSON object per line,
``iteration`` in each): losses, and the periodic evaluations' metrics."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tumor_det.report import plots

#: Validation metrics plotted against iteration, when present.
VALIDATION = ("tumor/dice", "tumor/sensitivity", "tumor/image_specificity", "tumor/fp_per_image")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``metrics.json`` (unreadable lines are left out)."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "iteration" in row:
            rows.append(row)
    return rows


def series(rows: list[dict], key: str, scale: float = 1.0) -> list[tuple[float, float]]:
    return [(r["iteration"] + 1, r[key] * scale) for r in rows
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def loss_plot(runs: dict[str, list[dict]]) -> str | None:
    """Training (and validation, ``TUMOR.VAL_LOSS_PERIOD``) total loss per run, or each loss of
    a single run."""
    lines = {}
    if len(runs) == 1:
        rows = next(iter(runs.values()))
        keys = sorted({k for r in rows for k in r if k == "total_loss" or k.startswith("loss_")
                       or k == "val_total_loss"})
        lines = {k: series(rows, k) for k in keys}
    else:
        for name, rows in runs.items():
            lines[f"{name} total_loss"] = series(rows, "total_loss")
    lines = {k: v for k, v in lines.items() if v}
    if not lines:
        return None
    return plots.training_plot(lines, "Training loss", "loss", log=True)


def validation_plot(runs: dict[str, list[dict]]) -> str | None:
    """The periodic evaluations (``TEST.EVAL_PERIOD``) against iteration: tumor metrics and mask
    AP / 100, per run (the learning curve of a cross-validation: held-out Dice per fold)."""
    lines = {}
    for name, rows in runs.items():
        prefix = f"{name} " if len(runs) > 1 else ""
        keys = ("tumor/dice",) if len(runs) > 1 else VALIDATION
        for key in keys:
            lines[prefix + key] = series(rows, key)
        if len(runs) == 1:
            lines["segm/AP / 100"] = series(rows, "segm/AP", 0.01)
    lines = {k: v for k, v in lines.items() if v}
    if not lines:
        return None
    title = "Validation metrics" if len(runs) == 1 else "Held-out Dice during training"
    return plots.training_plot(lines, title, "value")
