"""``tools/evaluate.py``: score NIfTI tumor masks against ground truth, case by case.

The command line only: :func:`tumor_det.evaluation.cases.evaluate_folder` matches the files
(:mod:`tumor_det.evaluation.matching`), scores each case and writes ``per_case.csv`` and
``summary.json``. Exit status: 0, 1 when no case could be scored, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tumor_det.cli.common import user_error
from tumor_det.evaluation.cases import EvaluationError, evaluate_folder
from tumor_det.report.build import report_after_run

PROG = "evaluate.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score NIfTI tumor masks against ground truth, case by case (Dice, HD95, "
                    "lesion sensitivity, false positives, volumes, specificity).")
    parser.add_argument("--pred", type=Path, required=True,
                        help="folder of predicted masks: <case>_mask.nii.gz or <case>.nii.gz")
    parser.add_argument("--gt", type=Path, required=True,
                        help="folder of ground truth: <case>.nii.gz or <case>_seg.nii.gz "
                             "(voxels > 0 are tumor)")
    parser.add_argument("--output", type=Path, required=True,
                        help="folder for per_case.csv and summary.json")
    parser.add_argument("--lesion-iou", type=float, default=0.0,
                        help="a lesion is found by a predicted component with IoU >= this; "
                             "0 (default): any overlap, as BraTS 2023")
    parser.add_argument("--affine-tol", type=float, default=1e-3,
                        help="largest difference allowed between the affines (default 1e-3)")
    return parser


def _fmt(stats: dict, unit: str = "") -> str:
    if stats["mean"] is None:
        return "n/a"
    std = f" ± {stats['std']:.3f}" if stats["std"] is not None else ""
    return f"{stats['mean']:.3f}{std}{unit} (median {stats['median']:.3f}, n={stats['n']})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        if not 0 <= args.lesion_iou <= 1:
            raise EvaluationError("--lesion-iou must be between 0 and 1")
        summary = evaluate_folder(args.pred, args.gt, args.output, args.lesion_iou,
                                  args.affine_tol)
    except (EvaluationError, OSError) as exc:
        return user_error(PROG, exc)
    m, lesions = summary["metrics"], summary["lesions"]
    spec = summary["specificity"]
    print(f"cases: {summary['cases']} evaluated ({summary['tumor_cases']} with tumor, "
          f"{summary['tumor_free_cases']} tumor-free), {len(summary['skipped'])} skipped, "
          f"{len(summary['unmatched_predictions'])} unmatched predictions, "
          f"{len(summary['unmatched_ground_truth'])} ground truth without prediction")
    print(f"Dice (tumor cases): {_fmt(m['dice'])}")
    print(f"HD95: {_fmt(m['hd95_mm'], ' mm')}")
    sens = lesions["sensitivity"]
    print(f"lesions: {lesions['found']}/{lesions['true']} found"
          + (f" (sensitivity {sens:.3f})" if sens is not None else "")
          + f", {lesions['false_positives']} false positives")
    print(f"volume error: {_fmt(m['volume_error_ml'], ' mL')}")
    print(f"specificity: {spec:.3f}" if spec is not None
          else "specificity: n/a (no tumor-free case)")
    print(f"wrote {Path(args.output) / 'per_case.csv'} and {Path(args.output) / 'summary.json'}")
    if summary["cases"]:
        report_after_run(args.output, "cases", command=[PROG, *(argv or sys.argv[1:])])
    return 0 if summary["cases"] else 1
