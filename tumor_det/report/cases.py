"""The page of a per-case 3D evaluation (``tools/evaluate.py``: ``per_case.csv``,
``summary.json``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tumor_det.io import InputError, load_nifti
from tumor_det.io.geometry import display_slices
from tumor_det.report import html, plots, thumbnails
from tumor_det.report.definitions import definition, label
from tumor_det.report.splash import scan_paths

import numpy as np

SUMMARY = ("dice", "hd95_mm", "lesion_sensitivity", "false_positives", "volume_error_ml",
           "abs_volume_error_ml")
COLUMNS = ("dice", "hd95_mm", "true_lesions", "pred_lesions", "found_lesions",
           "false_positives", "lesion_sensitivity", "true_volume_ml", "pred_volume_ml",
           "volume_error_ml")


def _num(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _slices(path: Path) -> np.ndarray | None:
    try:
        return np.asarray(display_slices(load_nifti(path))[0])
    except (InputError, OSError, ValueError):
        return None


def case_thumbnail(pred: Path, gt: Path, scan: Path | None) -> html.Cell:
    """The case's key slice (largest true tumor, else largest prediction)."""
    p, g = _slices(pred), _slices(gt)
    if p is None or g is None:
        return html.Cell("-", "")
    k = thumbnails.key_slice(g > 0, p > 0)
    image = _slices(scan) if scan is not None else None
    image = image[k] if image is not None and image.shape == g.shape else None
    uri = thumbnails.thumbnail_uri(image, g[k] > 0, p[k] > 0)
    return html.Cell(html.image(uri, f"slice {k}", "thumb") + f"slice {k}", k)


def build(page: html.Page, run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    with (run_dir / "per_case.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    m = summary["metrics"]
    cards = [(label(k), (m.get(k) or {}).get("mean"), definition(k)) for k in SUMMARY]
    cards.append((label("specificity"), summary.get("specificity"), definition("specificity")))
    body = html.cards(cards)
    body += html.note(f"{summary['cases']} cases ({summary['tumor_cases']} with tumor, "
                      f"{summary['tumor_free_cases']} tumor-free); lesion rule: "
                      f"{summary.get('lesion_rule', '')}; means over the cases where defined.")
    body += html.table(["metric", "mean", "median", "std", "n"],
                       [[label(k), s.get("mean"), s.get("median"), s.get("std"), s.get("n")]
                        for k, s in m.items() if isinstance(s, dict)], sortable=False)
    les = summary.get("lesions", {})
    body += html.note(f"lesions: {les.get('found')}/{les.get('true')} found, "
                      f"{les.get('false_positives')} false positives (pooled sensitivity "
                      f"{html.fmt(les.get('sensitivity'))}).")
    page.add("Headline metrics", body + "<h3>Definitions</h3>" + html.definitions(
        [(label(k), definition(k)) for k in (*SUMMARY, "specificity")]))
    dice = [float(r["dice"]) for r in rows if r["dice"] not in ("", "nan")
            and r.get("tumor_free") != "True"]
    page.add("Plots", '<div class="plots">' + html.image(
        plots.dice_plot({"cases": dice}), "Dice per case") + "</div>")
    pred_dir, gt_dir = Path(summary["prediction_folder"]), Path(summary["ground_truth_folder"])
    scans = scan_paths(pred_dir)
    table = []
    for r in rows:
        scan = next((p for stem, p in scans.items() if r["case"] in (stem, Path(p).name)), None)
        thumb = case_thumbnail(pred_dir / r["prediction"], gt_dir / r["ground_truth"], scan)
        table.append([r["case"], r["tumor_free"], *(_num(r[k]) for k in COLUMNS), thumb])
    page.add("Per case", html.LEGEND + html.table(
        ["case", "tumor-free", *(label(k) if k in ("dice", "hd95_mm") else k.replace("_", " ")
                                 for k in COLUMNS), "key slice"], table)
        + html.note("Key slice: the axial slice with the largest true tumor (else the largest "
                    "prediction), over the scan when the prediction folder's results.csv names "
                    "it, else over black."))
    skipped = summary.get("skipped") or []
    if skipped:
        page.add("Skipped", html.table(["file", "reason"], [list(s) if isinstance(s, list)
                                                            else [str(s), ""] for s in skipped]))

