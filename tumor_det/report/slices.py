"""The per-slice part of an evaluation (and of each cross-validation fold): what the
TumorEvaluator wrote in ``tumor_metrics_per_image.csv``, the saved predictions, FROC and PR."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tumor_det.evaluation.pooled import read_records
from tumor_det.report import curves, html, plots, thumbnails

import cv2

#: At most this many slices get a thumbnail (the worst Dice first, then the most FPs).
MAX_THUMBNAILS = 200
COLUMNS = ("gt_lesions", "pred_lesions", "found_lesions", "false_positives", "dice", "iou",
           "hd95")


@dataclass
class EvaluatedSet:
    """One evaluated dataset: the evaluator's folder, its records and (when the ground truth is
    found) the slices with masks and predictions."""

    name: str
    folder: Path
    records: list[dict]
    slices: list[curves.Slice] | None
    gt_file: Path | None

    @property
    def results(self) -> Path:
        return self.folder / "coco_instances_results.json"


def load_set(folder: Path, datasets_root: str | None) -> EvaluatedSet:
    name = folder.name
    records = read_records(folder / "tumor_metrics_per_image.csv")
    found = curves.ground_truth_file(name, datasets_root)
    slices = None
    if found is not None:
        slices = curves.load_slices(found[0], found[1], folder / "coco_instances_results.json")
    return EvaluatedSet(name, folder, records, slices, found[0] if found else None)


def _badness(r: dict) -> tuple[float, float]:
    dice = r.get("dice", math.nan)
    return (dice if not math.isnan(dice) else 2.0, -r.get("false_positives", 0.0))


def slice_table(sets: list[tuple[str, EvaluatedSet]], threshold: float) -> str:
    """Per-slice rows of every set (a ``set`` column when several), each with a thumbnail of the
    slice: ground truth and predictions scoring >= ``threshold`` outlined."""
    rows, ranked = [], []
    for label, s in sets:
        by_id = {str(sl.image_id): sl for sl in s.slices or []}
        for r in s.records:
            ranked.append((_badness(r), label, r, by_id.get(str(r["image_id"]).split(".")[0])))
    chosen = {id(r) for _, _, r, _ in sorted(ranked, key=lambda x: x[0])[:MAX_THUMBNAILS]}
    for _, label, r, sl in sorted(ranked, key=lambda x: (x[1], str(x[2]["file_name"]))):
        thumb = html.Cell("-", "")
        if sl is not None and id(r) in chosen:
            image = cv2.imread(sl.file_name, cv2.IMREAD_UNCHANGED)
            shape = image.shape[:2] if image is not None else (
                sl.gt[0].shape if sl.gt else sl.preds[0][1].shape if sl.preds else None)
            if shape is not None:
                uri = thumbnails.thumbnail_uri(image, sl.gt_union(shape),
                                               sl.pred_union(threshold, shape))
                thumb = html.Cell(html.image(uri, r["file_name"], "thumb"), r.get("dice", ""))
        rows.append([*([label] if len(sets) > 1 else []), r["file_name"],
                     r.get("patient_id", ""), *(r.get(k, math.nan) for k in COLUMNS), thumb])
    headers = [*(["fold"] if len(sets) > 1 else []), "slice", "patient", "true lesions",
               "predicted", "found", "FP", "Dice", "IoU", f"HD95 ({_unit(sets)})", "key slice"]
    return html.LEGEND + html.table(headers, rows)


def _unit(sets: list[tuple[str, EvaluatedSet]]) -> str:
    units = {r.get("hd95_unit") for _, s in sets for r in s.records}
    return "mm" if units == {"mm"} else "px" if units == {"px"} else "mm/px"


def curve_plots(sets: list[tuple[str, EvaluatedSet]], threshold: float, min_iou: float,
                pooled_label: str | None = None) -> tuple[list[str], dict]:
    """FROC (per set, or pooled over the sets as ``pooled_label``) with the operating point at
    ``threshold``, precision-recall per set; the plots and the numbers they show."""
    uris, numbers = [], {"froc": {}, "pr": {}}
    with_slices = [(label, s) for label, s in sets if s.slices is not None]
    if with_slices and any(sl.preds for _, s in with_slices for sl in s.slices):
        groups = ({pooled_label: [sl for _, s in with_slices for sl in s.slices]}
                  if pooled_label else {label: s.slices for label, s in with_slices})
        froc = {k: curves.froc(v, min_iou) for k, v in groups.items()}
        ops = {k: curves.froc_at(v, min_iou, threshold) for k, v in groups.items()}
        uris.append(plots.froc_plot(froc, ops))
        numbers["froc"] = ops
    pr = {}
    for label, s in sets:
        if s.gt_file is not None:
            got = curves.precision_recall(s.gt_file, s.results)
            if got is not None:
                pr[label] = got
    if pr:
        uris.append(plots.pr_plot({k: v[:3] for k, v in pr.items()}))
        numbers["pr"] = pr
    return uris, numbers
