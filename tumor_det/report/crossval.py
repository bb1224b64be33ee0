"""The page of a cross-validation run (``tools/cross_validate.py``): per fold and pooled."""

from __future__ import annotations

import json
from pathlib import Path

from tumor_det.evaluation.pooled import COLUMNS
from tumor_det.report import html, plots, training
from tumor_det.report.config import read_settings
from tumor_det.report.definitions import definition, glossary, label
from tumor_det.report.evaluation import add_training
from tumor_det.report.slices import curve_plots, load_set, slice_table


def metrics_table(v: dict) -> str:
    """Per fold, mean ± std, pooled and pooled at the operating point (cv_summary's numbers)."""
    keys = [k for k, _ in COLUMNS]
    rows = [[f"fold {k}", *(row.get(key) for key in keys)] for k, row in enumerate(v["per_fold"])]
    rows.append(["mean", *(v["mean"].get(k) for k in keys)])
    rows.append(["std", *(v["std"].get(k) for k in keys)])
    rows.append(["pooled", *(v["pooled"].get(k) for k in keys)])
    op = v["operating_point"]
    rows.append([f"pooled at {op['score_threshold']:.2f}", *(op["pooled"].get(k) for k in keys)])
    return html.table(["", *(label(k) for k in keys)], rows, sortable=False)


def build(page: html.Page, run_dir: Path) -> None:
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    settings = read_settings(run_dir / "config.yaml")
    threshold = summary.get("score_threshold", settings.score_threshold)
    op = summary["operating_point"]
    folds = summary["folds"]
    names = [f"{summary['dataset']}_fold{k}" for k in range(folds)]
    first = next(iter(summary["variants"].values()))
    body = html.cards([(label(k), first["pooled"].get(k), definition(k))
                       for k, _ in COLUMNS if k != "images"])
    body += html.note(
        f"{folds} patient-level folds of {summary['dataset']}; cards: pooled over all held-out "
        f"slices at score threshold {threshold:.2f}. Operating point (best pooled Dice over all "
        f"held-out slices, {op['from']}): {op['score_threshold']:.2f}, chosen on these same "
        "folds (optimistic).")
    for variant, v in summary["variants"].items():
        body += f"<h3>{html.esc(variant)}</h3>" + metrics_table(v)
    body += "<h3>Definitions</h3>" + html.definitions(glossary([k for k, _ in COLUMNS]))
    body += html.note("std: sample standard deviation over folds (ddof 1). Pooled: the "
                      "per-slice records of all held-out slices taken together; mask AP: "
                      "COCOeval over all held-out predictions.")
    page.add("Headline metrics: per fold and pooled", body)

    for variant, v in summary["variants"].items():
        sets = []
        for k, name in enumerate(names):
            folder = run_dir / f"fold{k}" / variant / name
            if (folder / "tumor_metrics_per_image.csv").is_file():
                sets.append((f"fold {k}", load_set(folder, settings.datasets_root)))
        uris, _ = curve_plots(sets, threshold, settings.lesion_iou,
                              pooled_label="pooled held-out folds")
        uris.insert(0, plots.threshold_plot(v["threshold_scan"],
                                            v["operating_point"]["score_threshold"]))
        uris.append(plots.dice_plot({lbl: [r["dice"] for r in s.records if r["gt_lesions"] > 0]
                                     for lbl, s in sets}, "held-out slice with tumor, per fold"))
        page.add(f"Plots ({variant})", '<div class="plots">' + "".join(
            html.image(u, "plot") for u in uris) + "</div>" + html.note(
            f"FROC pooled over the held-out folds, the operating point at {threshold:.2f}; "
            "precision-recall per fold."))
        page.add(f"Per held-out slice ({variant})", slice_table(sets, threshold))
    runs = {f"fold {k}": training.read_metrics(run_dir / f"fold{k}" / "metrics.json")
            for k in range(folds)}
    runs = {k: v for k, v in runs.items() if v}
    if runs:
        add_training(page, runs)
