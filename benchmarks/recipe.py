#!/usr/bin/env python
"""Benchmark: the small-data recipe's ablations, each a patient-level cross-validation.

    python tools/prepare_dataset.py --format via --input ../shared/datasets/brain_tumor_mri/train \
        --output datasets/brain_tumor_cv --classes tumor --folds 3
    python benchmarks/recipe.py --dataset brain_tumor_cv --iters 500 \
        --variants baseline intensity copy_paste elastic lsj

Each variant is ``--config-file`` (default ``quick_cpu.yaml``) plus the overrides in
:data:`VARIANTS`, trained for ``--iters`` iterations per fold (LR steps at 80 % and 93 %,
evaluated on the held-out fold every ``--iters // 2``) by
:func:`~tumor_det.engine.cross_validation.cross_validate`
into ``--output/<variant>``. A variant whose
summary exists is not run again (``--rerun`` forces it). ``--train-fraction F`` trains each fold
on the first F of every training fold's patients (held-out folds stay whole): the learning curve
against the number of training slices. The table (pooled over all held-out slices, at the
config's score threshold and at the cross-validated operating point) and the learning curve
(mean held-out Dice over the folds against iterations and training minutes) are printed and,
with ``--results``, written into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumor_det.config.config import get_tumor_cfg, resolve_device
from tumor_det.data import register_all
from tumor_det.engine.cross_validation import (
    SUMMARY_JSON,
    cross_validate,
    fold_config,
    fold_datasets,
    run_fold,
    summarize,
    write_summary,
)

from detectron2.data import DatasetCatalog, MetadataCatalog

from benchmarks.common import RESULTS, log, machine_info, marker, write_section

#: Ablations: config overrides on top of ``--config-file``.
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "intensity": ["TUMOR.AUGMENT.GAMMA", "(0.7, 1.5)", "TUMOR.AUGMENT.BIAS_FIELD", "0.3",
                  "TUMOR.AUGMENT.NOISE_STD", "0.03", "TUMOR.AUGMENT.CONTRAST", "(0.75, 1.33)"],
    "copy_paste": ["TUMOR.AUGMENT.COPY_PASTE.PROB", "0.5"],
    "elastic": ["TUMOR.AUGMENT.ELASTIC.PROB", "0.5"],
    "lsj": ["TUMOR.AUGMENT.LSJ.ENABLED", "True", "TUMOR.AUGMENT.LSJ.SIZE", "256",
            "TUMOR.AUGMENT.LSJ.MIN_SCALE", "0.5", "TUMOR.AUGMENT.LSJ.MAX_SCALE", "1.5"],
    # elastic deformation and large scale jitter together (one run for both, on a CPU budget)
    "geometry": ["TUMOR.AUGMENT.ELASTIC.PROB", "0.5", "TUMOR.AUGMENT.LSJ.ENABLED", "True",
                 "TUMOR.AUGMENT.LSJ.SIZE", "256", "TUMOR.AUGMENT.LSJ.MIN_SCALE", "0.5",
                 "TUMOR.AUGMENT.LSJ.MAX_SCALE", "1.5"],
    "tta": ["TEST.AUG.ENABLED", "True"],
    # the shipped recipe (configs/small_data_cpu.yaml), as it is
    "recipe": [],
}
#: Variants that run a different config file.
VARIANT_CONFIGS = {"recipe": "small_data_cpu.yaml"}
COLUMNS = (("dice", "Dice"), ("dice_all", "Dice all"), ("sensitivity", "lesion sens."),
           ("fp_per_image", "FP/slice"), ("mask_AP", "mask AP"))


def variant_cfg(args, variant: str, output: Path):
    """The config of ``variant``: base config + common schedule + the variant's overrides."""
    iters = args.iters
    opts = ["SOLVER.MAX_ITER", str(iters),
            "SOLVER.STEPS", f"({int(iters * 0.8)}, {int(iters * 0.93)})",
            "SOLVER.CHECKPOINT_PERIOD", str(max(iters // 2, 1)),
            "TEST.EVAL_PERIOD", str(max(iters // 2, 1)), "SEED", str(args.seed),
            "OUTPUT_DIR", str(output)]
    cfg = get_tumor_cfg(VARIANT_CONFIGS.get(variant, args.config_file),
                        opts + VARIANTS[variant] + args.opts)
    resolve_device(cfg)
    cfg.freeze()
    return cfg


def subset_folds(names: list[str], fraction: float) -> list[str]:
    """Register ``<fold>_p<percent>``: the first ``fraction`` of each fold's patients."""
    subsets = []
    for name in names:
        dicts = DatasetCatalog.get(name)
        patients = list(dict.fromkeys(str(d.get("patient_id", d["file_name"])) for d in dicts))
        keep = set(patients[:max(1, math.ceil(fraction * len(patients)))])
        sub = f"{name}_p{round(fraction * 100)}"
        if sub not in DatasetCatalog.list():
            chosen = [d for d in dicts if str(d.get("patient_id", d["file_name"])) in keep]
            DatasetCatalog.register(sub, lambda chosen=chosen: chosen)
            MetadataCatalog.get(sub).set(**{k: v for k, v in MetadataCatalog.get(name).as_dict()
                                            .items() if k != "name"})
        subsets.append(sub)
    return subsets


def run_variant(args, variant: str) -> dict:
    """Cross-validate one variant (or read its finished summary)."""
    suffix = "" if args.train_fraction >= 1 else f"_p{round(args.train_fraction * 100)}"
    output = Path(args.output) / f"{variant}{suffix}"
    cfg = variant_cfg(args, variant, output)
    names = fold_datasets(args.dataset, args.folds)
    if (output / SUMMARY_JSON).is_file() and not args.rerun:
        log(f"{variant}{suffix}: finished earlier, reading {output / SUMMARY_JSON}")
    elif args.train_fraction >= 1:
        cross_validate(cfg, args.dataset, args.folds, resume=not args.rerun)
    else:  # the same folds, each trained on a subset of the other folds' patients
        subsets = subset_folds(names, args.train_fraction)
        for k in range(len(names)):
            fold_cfg = fold_config(cfg, names, k, output)
            fold_cfg.defrost()
            fold_cfg.DATASETS.TRAIN = tuple(s for j, s in enumerate(subsets) if j != k)
            fold_cfg.freeze()
            if not (Path(fold_cfg.OUTPUT_DIR) / "cv_fold_metrics.json").is_file():
                run_fold(fold_cfg, str(output), True, "final")
        write_summary(cfg, summarize(cfg, names, output), output)
    summary = json.loads((output / SUMMARY_JSON).read_text())
    summary["curve"] = learning_curve(output, len(names), cfg.SOLVER.MAX_ITER)
    summary["train_slices"] = [sum(len(DatasetCatalog.get(n)) for n in
                                   json.loads((output / f"fold{k}" / "cv_fold_metrics.json")
                                              .read_text())["train_datasets"])
                               for k in range(len(names))]
    return summary


def learning_curve(output: Path, folds: int, max_iter: int) -> list[dict]:
    """Held-out Dice (score threshold of the config) at each periodic evaluation, mean over
    folds, with the training minutes it took (iterations x the fold's mean s/iter)."""
    by_iter: dict[int, list[tuple[float, float]]] = {}
    for k in range(folds):
        rows = [json.loads(line) for line in
                (output / f"fold{k}" / "metrics.json").read_text().splitlines() if line.strip()]
        times = [r["time"] for r in rows if "time" in r]
        s_per_iter = sum(times) / len(times) if times else math.nan
        for r in rows:
            if "tumor/dice" in r:
                it = min(r["iteration"] + 1, max_iter)
                by_iter.setdefault(it, []).append((r["tumor/dice"], it * s_per_iter / 60))
    return [{"iteration": it, "dice": sum(d for d, _ in v) / len(v),
             "minutes": sum(m for _, m in v) / len(v), "folds": len(v)}
            for it, v in sorted(by_iter.items())]


def _fmt(value, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if key == "mask_AP" else f"{value:.3f}"


def report(args, results: dict[str, dict]) -> str:
    """Markdown: one row per variant (pooled, at the config's threshold and at the operating
    point; with TTA where it ran) and the learning curves."""
    info = machine_info()
    lines = [f"`python benchmarks/recipe.py {' '.join(sys.argv[1:])}`, "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Machine: {info.get('cpu', '?')}, "
             f"{info.get('cores', '?')} cores; torch {info.get('torch', '?')}.", "",
             f"{args.folds or 'all'}-fold patient-level cross-validation of `{args.dataset}`, "
             f"{args.iters} iterations per fold, seed {args.seed}. Pooled over all held-out "
             "slices; `@op`: at the operating point (score threshold with the best pooled "
             "Dice, chosen on these same folds: optimistic).", "",
             "| variant | train slices/fold | inference | threshold | "
             + " | ".join(t for _, t in COLUMNS) + " | Dice @op (thr) | train min/fold |",
             "|---|---|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    for variant, s in results.items():
        for name, v in s["variants"].items():
            op = v["operating_point"]
            lines.append(
                f"| {variant} | {min(s['train_slices'])}-{max(s['train_slices'])} | {name} | "
                f"{s['score_threshold']:.2f} | "
                + " | ".join(_fmt(v["pooled"].get(k), k) for k, _ in COLUMNS)
                + f" | {_fmt(op['pooled'].get('dice'), 'dice')} ({op['score_threshold']:.2f})"
                + f" | {s['curve'][-1]['minutes']:.1f} |")
    lines += ["", "Learning curve (mean held-out Dice over folds at the config's threshold; "
              "minutes = iterations x mean s/iter):", "",
              "| variant | " + " | ".join(f"it {c['iteration']}" for c in
                                           next(iter(results.values()))["curve"]) + " |",
              "|---|" + "---:|" * len(next(iter(results.values()))["curve"])]
    for variant, s in results.items():
        lines.append(f"| {variant} | " + " | ".join(
            f"{c['dice']:.3f} ({c['minutes']:.1f} min)" for c in s["curve"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="brain_tumor_cv")
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--config-file", default="quick_cpu.yaml")
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["baseline"], choices=list(VARIANTS))
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--output", default="output/recipe")
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--results", default=None,
                        help=f"section name to write into {RESULTS.name}")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    register_all()
    load_start = os.getloadavg()[0]
    results = {v: run_variant(args, v) for v in args.variants}
    text = report(args, results) + (
        f"\n\n1-min load average: {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at "
        "the end (2 cores: above 2, other jobs shared them and minutes are inflated).")
    print(text)
    if args.results:
        task = f"recipe-{args.results}"
        write_section(RESULTS, task, "\n".join([
            marker(task, "start"), f"## Small-data recipe: {args.results}", "", text,
            marker(task, "end")]))


if __name__ == "__main__":
    main()
