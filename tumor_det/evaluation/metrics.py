"""The one overlap primitive: confusion counts of two masks, and Dice/IoU from them.

Every Dice in tumor-det (per-slice and per-patient evaluation, per-case 3D evaluation, the
cross-validation's threshold scan, export parity, the benchmarks) is computed from
:func:`confusion` (nnU-Net's ``compute_tp_fp_fn_tn`` in ``evaluation/evaluate_predictions.py``)
and :func:`dice` / :func:`iou`, so that "Dice" means one thing everywhere: ``2 tp / (2 tp + fp +
fn)`` in float64, and 1 when both masks are empty (nothing to find, nothing found; MONAI's
``ignore_empty=False`` and the BraTS convention).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Confusion(NamedTuple):
    """Voxel (or pixel) counts of a predicted mask against the true one."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def predicted(self) -> int:
        return self.tp + self.fp

    @property
    def true(self) -> int:
        return self.tp + self.fn


def confusion(pred, gt, ignore=None) -> Confusion:
    """True/false positives/negatives of the bool masks ``pred`` and ``gt`` (same shape; numpy
    arrays or CPU tensors), outside ``ignore`` (a bool mask of voxels not scored) when given."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    if ignore is not None:
        keep = ~np.asarray(ignore, bool)
        pred, gt = pred[keep], gt[keep]
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    return Confusion(tp, fp, fn, int(pred.size) - tp - fp - fn)


def dice(counts: Confusion | tuple[int, int, int], empty: float = 1.0) -> float:
    """Dice ``2 tp / (2 tp + fp + fn)`` of confusion counts (``(tp, fp, fn)`` is enough; summed
    counts give the pooled Dice); ``empty`` when both masks are empty."""
    tp, fp, fn = counts[:3]
    total = 2 * tp + fp + fn
    return 2.0 * tp / total if total else empty


def iou(counts: Confusion | tuple[int, int, int], empty: float = 1.0) -> float:
    """Intersection over union ``tp / (tp + fp + fn)``; ``empty`` when both masks are empty."""
    tp, fp, fn = counts[:3]
    total = tp + fp + fn
    return tp / total if total else empty


def mask_dice(pred, gt) -> float:
    """Dice of two bool masks: ``dice(confusion(pred, gt))``."""
    return dice(confusion(pred, gt))
