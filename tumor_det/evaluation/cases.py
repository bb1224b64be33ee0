"""Per-case evaluation of NIfTI segmentations against ground truth (``tools/evaluate.py``,
command line in :mod:`tumor_det.cli.evaluate`).

Modelled on nnU-Net's ``compute_metrics_on_folder``: predictions and ground truth are matched by
file name, each case is scored in 3D in its own voxel grid, and ``per_case.csv`` and
``summary.json`` are written to the output folder (atomically, :mod:`tumor_det.utils.atomic`).

Matching: :mod:`tumor_det.evaluation.matching`.

Masks: voxels > 0 are tumor (binary masks and label maps alike). Prediction and ground truth
must share the grid (shape, and affine within ``affine_tol``); a case that does not, or whose
file cannot be read, is skipped with a warning and listed with the reason.

Per case (voxel sizes and volumes from the ground truth's affine):

* ``dice``: 3D Dice (:func:`tumor_det.evaluation.metrics.dice`, the one Dice: float64
  ``2 tp / (2 tp + fp + fn)``); 1 when both masks are empty, 0 when only one is;
* ``hd95_mm``: symmetric 95th-percentile Hausdorff distance between the mask surfaces in mm
  (MONAI's ``HausdorffDistanceMetric(percentile=95)`` with the voxel sizes as ``spacing``);
  only when both masks are non-empty, else empty (NaN);
* lesions: 3D connected components (``scipy.ndimage.label``, 26-connectivity) of each mask. A
  ground-truth lesion is found when a predicted component overlaps it (any shared voxel: the
  rule of BraTS 2023's lesion-wise metrics, here without their lesion dilation or size cut)
  or, with ``lesion_iou`` > 0, when their IoU is at least
  ``lesion_iou``; a predicted component that finds no lesion is a false positive;
  ``lesion_sensitivity`` = found / true lesions (NaN without lesions);
* volumes in mL (voxels x voxel volume): ``true_volume_ml``, ``pred_volume_ml``,
  ``volume_error_ml`` = predicted - true, its absolute value, ``volume_error_pct`` = 100 x
  error / true volume (NaN for tumor-free cases).

Summary: mean, median, sample standard deviation and count of each metric over the cases where
it is defined (``dice`` over tumor cases, ``dice_tumor_free`` and ``dice_all`` separately; nnU-Net
itself leaves two empty masks out of its mean as NaN), pooled lesion sensitivity (all found /
all true lesions), false positives per case, and specificity: the share of tumor-free cases
(empty ground truth) whose prediction is empty.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tumor_det.evaluation.matching import match_cases, nifti_files
from tumor_det.evaluation.metrics import confusion, dice
from tumor_det.io.base import InputError
from tumor_det.io.geometry import Volume
from tumor_det.io.nifti import load_nifti
from tumor_det.utils.atomic import write_json, write_text

import numpy as np
import torch
from monai.metrics import HausdorffDistanceMetric
from scipy import ndimage
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

logger = logging.getLogger(__name__)

#: 26-connectivity: voxels sharing a face, an edge or a corner belong to one lesion.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
COLUMNS = ("case", "prediction", "ground_truth", "tumor_free", "dice", "hd95_mm",
           "true_lesions", "pred_lesions", "found_lesions", "false_positives",
           "lesion_sensitivity", "true_volume_ml", "pred_volume_ml", "volume_error_ml",
           "abs_volume_error_ml", "volume_error_pct", "spacing_mm")
SUMMARY_METRICS = ("dice", "hd95_mm", "lesion_sensitivity", "false_positives", "true_volume_ml",
                   "pred_volume_ml", "volume_error_ml", "abs_volume_error_ml",
                   "volume_error_pct")


class EvaluationError(Exception):
    """A usage error (missing folder, nothing to evaluate); the message is shown as is."""


def _tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask[None, None].astype(np.float32))  # (batch, channel, x, y, z)


def dice_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two bool masks (:mod:`tumor_det.evaluation.metrics`); 1 when both are empty."""
    return dice(confusion(pred, gt))


def hd95_mm(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """MONAI's symmetric 95th-percentile Hausdorff distance in mm; NaN if a mask is empty."""
    if not (pred.any() and gt.any()):  # undefined (MONAI would warn and return inf/NaN)
        return math.nan
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal call
        warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
        return float(metric(_tensor(pred), _tensor(gt), spacing=list(spacing)).reshape(-1)[0])


@dataclass
class LesionCounts:
    true: int
    predicted: int
    found: int
    false_positives: int


def lesion_counts(pred: np.ndarray, gt: np.ndarray, min_iou: float = 0.0) -> LesionCounts:
    """Match 26-connected components: a lesion is found when a predicted component overlaps it
    (IoU >= ``min_iou`` when > 0); a predicted component that finds none is a false positive."""
    gt_labels, n_gt = ndimage.label(gt, structure=CONNECTIVITY)
    pred_labels, n_pred = ndimage.label(pred, structure=CONNECTIVITY)
    both = (gt_labels > 0) & (pred_labels > 0)
    # hand-written: the overlap table of labelled components (no library builds it in 3D)
    pairs, shared = np.unique(np.stack([gt_labels[both], pred_labels[both]]), axis=1,
                              return_counts=True)
    if min_iou > 0 and shared.size:
        gt_size = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)
        pred_size = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
        iou = shared / (gt_size[pairs[0]] + pred_size[pairs[1]] - shared)
        pairs = pairs[:, iou >= min_iou]
    found = len(np.unique(pairs[0]))
    return LesionCounts(n_gt, n_pred, found, n_pred - len(np.unique(pairs[1])))


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float],
                 voxel_ml: float, min_iou: float = 0.0) -> dict[str, float | int | bool]:
    """The per-case metrics (module docstring) of two bool masks in one grid."""
    lesions = lesion_counts(pred, gt, min_iou)
    true_ml = float(gt.sum()) * voxel_ml
    pred_ml = float(pred.sum()) * voxel_ml
    error = pred_ml - true_ml
    return {
        "tumor_free": not gt.any(),
        "dice": dice_score(pred, gt),
        "hd95_mm": hd95_mm(pred, gt, spacing),
        "true_lesions": lesions.true,
        "pred_lesions": lesions.predicted,
        "found_lesions": lesions.found,
        "false_positives": lesions.false_positives,
        "lesion_sensitivity": lesions.found / lesions.true if lesions.true else math.nan,
        "true_volume_ml": true_ml,
        "pred_volume_ml": pred_ml,
        "volume_error_ml": error,
        "abs_volume_error_ml": abs(error),
        "volume_error_pct": 100.0 * error / true_ml if true_ml else math.nan,
    }


def grid_mismatch(pred: Volume, gt: Volume, affine_tol: float) -> str | None:
    """Why ``pred`` is not in ``gt``'s voxel grid, or None when it is."""
    if pred.data.shape != gt.data.shape:
        return f"prediction shape {pred.data.shape} != ground truth shape {gt.data.shape}"
    diff = float(np.abs(pred.affine - gt.affine).max())
    if diff > affine_tol:
        return f"affines differ by up to {diff:.4g} (tolerance {affine_tol:g})"
    return None


# --- folder --------------------------------------------------------------------------------

def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=np.float64)
    return {
        "mean": float(v.mean()) if v.size else None,
        "median": float(np.median(v)) if v.size else None,
        "std": float(v.std(ddof=1)) if v.size > 1 else None,  # sample standard deviation
        "n": int(v.size),
    }


def summarize(rows: Sequence[dict]) -> dict:
    """Statistics over cases, pooled lesion counts and specificity (module docstring)."""
    tumor = [r for r in rows if not r["tumor_free"]]
    free = [r for r in rows if r["tumor_free"]]
    metrics = {name: _stats([float(r[name]) for r in rows]) for name in SUMMARY_METRICS}
    metrics["dice"] = _stats([r["dice"] for r in tumor])
    metrics["dice_tumor_free"] = _stats([r["dice"] for r in free])
    metrics["dice_all"] = _stats([r["dice"] for r in rows])
    true = sum(r["true_lesions"] for r in rows)
    found = sum(r["found_lesions"] for r in rows)
    fps = sum(r["false_positives"] for r in rows)
    return {
        "cases": len(rows),
        "tumor_cases": len(tumor),
        "tumor_free_cases": len(free),
        "metrics": metrics,
        "lesions": {
            "true": true,
            "found": found,
            "predicted": sum(r["pred_lesions"] for r in rows),
            "false_positives": fps,
            "sensitivity": found / true if true else None,  # pooled over cases
            "false_positives_per_case": fps / len(rows) if rows else None,
        },
        "specificity": (sum(r["pred_lesions"] == 0 for r in free) / len(free)
                        if free else None),
    }


def _csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v)
                             else f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in row.items()})
    return buf.getvalue()


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def evaluate_case(pred_path: Path, gt_path: Path, min_iou: float, affine_tol: float) -> dict:
    """Read one pair and score it; raise :class:`InputError` with the reason to skip it."""
    gt = load_nifti(gt_path)
    pred = load_nifti(pred_path)
    reason = grid_mismatch(pred, gt, affine_tol)
    if reason:
        raise InputError(reason)
    row = case_metrics(np.asarray(pred.data) > 0, np.asarray(gt.data) > 0, gt.spacing,
                       gt.voxel_volume_mm3 / 1000.0, min_iou)
    row["spacing_mm"] = "x".join(f"{s:.4g}" for s in gt.spacing)
    return row


def evaluate_folder(pred_dir: Path, gt_dir: Path, output: Path, lesion_iou: float = 0.0,
                    affine_tol: float = 1e-3, progress: bool | None = None) -> dict:
    """Score every matched case, write ``per_case.csv`` and ``summary.json``; return the summary.

    Raises :class:`EvaluationError` for a missing folder or when no case matches.
    """
    for name, folder in (("--pred", pred_dir), ("--gt", gt_dir)):
        if not Path(folder).is_dir():
            raise EvaluationError(f"{name} folder not found: {folder}")
    pred_files, gt_files = nifti_files(Path(pred_dir)), nifti_files(Path(gt_dir))
    matching = match_cases(pred_files, gt_files)
    if not matching.pairs:
        raise EvaluationError(
            f"no case matched: {len(pred_files)} prediction and {len(gt_files)} ground-truth "
            f"NIfTI files (predictions <case>_mask.nii.gz or <case>.nii.gz, ground truth "
            f"<case>.nii.gz or <case>_seg.nii.gz)")
    for name, reason in matching.unmatched_predictions.items():
        logger.warning("prediction %s not evaluated: %s", name, reason)
    if matching.unmatched_ground_truth:
        logger.warning("%d ground-truth file(s) without a prediction: %s",
                       len(matching.unmatched_ground_truth),
                       ", ".join(matching.unmatched_ground_truth))

    rows, skipped = [], {}
    with logging_redirect_tqdm():
        for case, (pred_path, gt_path) in tqdm(matching.pairs.items(), desc="evaluate",
                                               unit="case", disable=None if progress is None
                                               else not progress):
            try:
                row = evaluate_case(pred_path, gt_path, lesion_iou, affine_tol)
            except InputError as exc:
                skipped[case] = str(exc)
                logger.warning("case %s skipped (%s vs %s): %s", case, pred_path.name,
                               gt_path.name, exc)
                continue
            rows.append({"case": case, "prediction": pred_path.name,
                         "ground_truth": gt_path.name, **row})

    summary = {
        "prediction_folder": str(pred_dir),
        "ground_truth_folder": str(gt_dir),
        "lesion_rule": (f"IoU >= {lesion_iou:g}" if lesion_iou > 0 else "any overlap")
                       + ", 26-connected components",
        **summarize(rows),
        "matched_cases": len(matching.pairs),
        "skipped": skipped,
        "unmatched_predictions": matching.unmatched_predictions,
        "unmatched_ground_truth": matching.unmatched_ground_truth,
        "ignored_ground_truth_images": matching.ignored_images,
    }
    output = Path(output)
    write_text(output / "per_case.csv", _csv([{k: r.get(k, "") for k in COLUMNS}
                                              for r in rows]))
    write_json(output / "summary.json", _json_safe(summary), indent=2)
    return summary
