"""K-fold cross-validation by patient: one model per fold, pooled metrics, an operating point.

    python tools/prepare_dataset.py --format via --input ../shared/datasets/brain_tumor_mri/train \
        --output datasets/brain_tumor_cv --classes tumor --folds 3
    python tools/cross_validate.py --config-file configs/quick_cpu.yaml --dataset brain_tumor_cv \
        --folds 3 OUTPUT_DIR output/cv_brain_tumor
    python tools/cross_validate.py ... --resume      # after a kill: finished folds are skipped

Fold k trains on the other folds and is evaluated on fold k; ``OUTPUT_DIR`` (default: the
config's ``OUTPUT_DIR``/cv_<NAME>) gets ``fold<k>/`` runs, ``cv_summary.json``,
``cv_summary.md`` and a ``config.yaml`` with the score threshold chosen on the held-out folds
(:mod:`tumor_det.engine.cross_validation`; the summaries: :mod:`tumor_det.evaluation.pooled`).
``--num-gpus N``: N GPUs, or N CPU processes without GPUs.
A bad command line exits with status 2 and one ``cross_validate.py: error: ...`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tumor_det.cli.common import USER_ERRORS, load_config, user_error
from tumor_det.config.config import resolve_device
from tumor_det.data import register_all
from tumor_det.engine.cross_validation import cross_validate, fold_datasets
from tumor_det.engine.distributed import resolve_backend
from tumor_det.evaluation.pooled import SUMMARY_JSON, SUMMARY_MD
from tumor_det.report.build import report_after_run

PROG = "cross_validate.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="path or built-in config name")
    parser.add_argument("--dataset", required=True,
                        help="prepared dataset with folds: NAME_fold0, NAME_fold1, ...")
    parser.add_argument("--folds", type=int, default=None,
                        help="number of folds (default: all registered NAME_fold<k>)")
    parser.add_argument("--resume", action="store_true",
                        help="skip finished folds; continue the unfinished one from its last "
                             "checkpoint")
    parser.add_argument("--checkpoint", choices=["final", "best"], default="final",
                        help="the model evaluated on its held-out fold: model_final.pth, or "
                             "model_best.pth (chosen on that same fold: optimistic)")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per fold (GPUs; CPU processes without CUDA)")
    parser.add_argument("--dist-backend", default="auto", choices=["auto", "nccl", "gloo"])
    parser.add_argument("--dist-url", default=None, help="process-group URL (default: free port)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides: KEY VALUE pairs")
    return parser


def run(argv: Sequence[str] | None = None) -> dict:
    """Run the cross-validation of the command line ``argv``; return its summary. A user error
    ends the process with status 2 and one ``cross_validate.py: error:`` line."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def own_output_dir(cfg) -> None:  # before the weights: ``last`` looks there
        if "OUTPUT_DIR" not in args.opts[::2]:
            cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, f"cv_{args.dataset}")

    try:
        cfg, _ = load_config(args.config_file, args.opts, prepare=own_output_dir, check=False)
        register_all(cfg.TUMOR.DATASETS_ROOT or None)
        fold_datasets(args.dataset, args.folds)
        backend = resolve_backend(args.dist_backend)
    except (*USER_ERRORS, RuntimeError) as exc:
        raise SystemExit(user_error(PROG, exc)) from None
    resolve_device(cfg)
    cfg.freeze()
    summary = cross_validate(cfg, args.dataset, args.folds, num_gpus=args.num_gpus,
                             resume=args.resume, checkpoint=args.checkpoint, backend=backend,
                             dist_url=args.dist_url)
    out = Path(cfg.OUTPUT_DIR)
    sys.stdout.write((out / SUMMARY_MD).read_text() + "\n")
    print(f"written: {out / SUMMARY_JSON}, {out / SUMMARY_MD}, {out / 'config.yaml'}")
    report_after_run(out, "cross_validation", command=[PROG, *(argv or sys.argv[1:])],
                     config_file=out / "config.yaml")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``tools/cross_validate.py``: 0 when the cross-validation finished, 2 on a user error."""
    run(argv)
    return 0
