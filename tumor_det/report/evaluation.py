"""The page of an evaluation run (``tools/train_net.py``, with or without ``--eval-only``)."""

from __future__ import annotations

import math
from pathlib import Path

from tumor_det.evaluation.evaluator import aggregate
from tumor_det.evaluation.pooled import read_records
from tumor_det.report import html, plots, training
from tumor_det.report.config import read_settings
from tumor_det.report.definitions import definition, glossary, label
from tumor_det.report.detect import evaluation_dirs
from tumor_det.report.slices import curve_plots, load_set, slice_table

HEADLINE = ("dice", "sensitivity", "fp_per_image", "image_specificity", "hd95")


def headline_cards(metrics: dict, keys=HEADLINE) -> str:
    return html.cards([(label(k), metrics.get(k), definition(k)) for k in keys])


def add_training(page: html.Page, runs: dict[str, list[dict]]) -> None:
    uris = [u for u in (training.loss_plot(runs), training.validation_plot(runs)) if u]
    if uris:
        page.add("Training", '<div class="plots">' + "".join(
            html.image(u, "training curve") for u in uris) + "</div>" + html.note(
            "From Detectron2's metrics.json: losses every 20 iterations, validation metrics at "
            "each TEST.EVAL_PERIOD evaluation."))


def build(page: html.Page, run_dir: Path) -> None:
    settings = read_settings(run_dir / "config.yaml")
    for folder in evaluation_dirs(run_dir):
        s = load_set(folder, settings.datasets_root)
        variant = folder.parent.name
        metrics = aggregate(s.records)
        uris, numbers = curve_plots([(s.name, s)], settings.score_threshold,
                                    settings.lesion_iou)
        pr = numbers["pr"].get(s.name)
        metrics["mask_AP"] = pr[3] if pr else math.nan
        body = headline_cards(metrics, (*HEADLINE, "mask_AP"))
        body += html.note(f"{int(metrics['images'])} slices ({int(metrics['tumor_images'])} with "
                          f"tumor) of {s.name}, {variant}; score threshold "
                          f"{settings.score_threshold:.2f} (TUMOR.EVAL.SCORE_THRESHOLD), lesion "
                          f"IoU {settings.lesion_iou:.2f}.")
        body += "<h3>Definitions</h3>" + html.definitions(
            glossary([*HEADLINE, "mask_AP", "dice_all", "iou", "patient_dice"]))
        if s.slices is None:
            body += html.note(f"Ground truth of {s.name} not found (not registered under the "
                              "config's TUMOR.DATASETS_ROOT): no FROC, PR or key slices.")
        elif not s.results.is_file():
            body += html.note("No coco_instances_results.json (TUMOR.EVAL.COCO False): the "
                              "detections were not saved, so no FROC, PR, AP or prediction "
                              "outlines.")
        page.add(f"Headline metrics: {s.name} ({variant})", body)
        dice = [r["dice"] for r in s.records if r["gt_lesions"] > 0]
        uris.append(plots.dice_plot({s.name: dice}, "slice with tumor (sorted by Dice)"))
        page.add(f"Plots: {s.name} ({variant})", '<div class="plots">' + "".join(
            html.image(u, "plot") for u in uris) + "</div>")
        page.add(f"Per slice: {s.name} ({variant})",
                 slice_table([(s.name, s)], settings.score_threshold))
        patients = folder / "tumor_metrics_per_patient.csv"
        if patients.is_file():
            rows = read_records(patients)
            page.add(f"Per patient: {s.name} ({variant})", html.table(
                ["patient", "slices", "true lesions", "found", "FP", "Dice", "sensitivity"],
                [[r["patient_id"], r["slices"], r["gt_lesions"], r["found_lesions"],
                  r["false_positives"], r["dice"], r["sensitivity"]] for r in rows]))
    rows = training.read_metrics(run_dir / "metrics.json")
    if rows:
        add_training(page, {"run": rows})
