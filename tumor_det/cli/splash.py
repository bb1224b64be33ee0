"""``tools/splash.py``: run the tumor model on images, DICOM, NIfTI and videos; write splashes.

The command line only: inputs are found by :func:`tumor_det.io.expand_inputs`, predicted by
:func:`tumor_det.splash.runner.run` and written by :class:`tumor_det.splash.sink.SplashSink`.

Outputs in ``--output`` per 2D input: ``<stem>_splash.png``, ``<stem>_overlay.png``,
``<stem>_mask.png``; per volume: ``<stem>_mask.nii.gz``, ``<stem>_instances.nii.gz``,
``<stem>_classes.nii.gz`` (several classes), ``<stem>_probabilities.nii.gz``
(``--save-probabilities``), ``<stem>_lesions.csv``, ``<stem>_splash.mp4`` and for a DICOM series
``<stem>_seg.dcm`` (DICOM-SEG; ``--no-dicom-seg`` turns it off); per video:
``<stem>_splash.mp4``; for the whole run ``results.json`` (COCO results, RLE masks) and
``results.csv`` (one row per input), and after each input's outputs its done marker
``done/<stem>.json`` (what ``--continue`` and ``--merge`` read; see
:mod:`tumor_det.splash.shards`). Exit status: 0 when at least one input was processed,
1 when none could be, 2 for a usage error (no such input, bad config or weights).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from tumor_det.cli import splash_batch
from tumor_det.cli.common import USER_ERRORS, load_config, user_error
from tumor_det.config.config import DEFAULT_CONFIG
from tumor_det.evaluation.threshold import filter_candidates_at_threshold, with_score_threshold
from tumor_det.inference.backends import BACKENDS, ExportError
from tumor_det.inference.lesions import SINGLE_SLICE_MIN_SCORE, LesionRules
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io import Source, UsageError, expand_inputs
from tumor_det.report.build import report_after_run
from tumor_det.splash.batch import run_batch
from tumor_det.splash.cluster import Cluster, PredictorSpec
from tumor_det.splash.drawing import RED
from tumor_det.splash.shards import SinkSettings
from tumor_det.splash.sink import Report
from tumor_det.splash.writers import OutputError

from tabulate import tabulate

PROG = "splash.py"
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Find brain tumors with the Mask R-CNN model; write colour splashes, "
        "overlays, masks (PNG, NIfTI), splash videos and results.json/results.csv.",
        epilog="Config overrides go last, as KEY VALUE pairs (or after --opts), e.g. "
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.3",
    )
    p.add_argument("--config-file", default=str(DEFAULT_CONFIG), metavar="FILE",
                   help="Detectron2 YAML config (default: %(default)s)")
    p.add_argument("--input", nargs="+", default=[], metavar="PATH",
                   help="image/DICOM/NIfTI files, folders (their files; a DICOM series folder "
                   "is one volume) or quoted globs")
    p.add_argument("--video-input", metavar="VIDEO", help="a video file")
    p.add_argument("--output", default="output/splash", metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("--confidence-threshold", type=float, default=None, metavar="T",
                   help="minimum score of a tumor (default: the config's "
                   "TUMOR.EVAL.SCORE_THRESHOLD, the operating point it was evaluated at)")
    p.add_argument("--weights", nargs="+", metavar="W",
                   help="checkpoint file, or last (the last checkpoint in OUTPUT_DIR); sets "
                   "MODEL.WEIGHTS. Several files (e.g. one per cross-validation fold) make an "
                   "ensemble: each model runs and their detections are fused")
    p.add_argument("--allow-untrained", action="store_true",
                   help="run even without weights (a random model: for tests and speed "
                   "benchmarks only; its 'tumors' mean nothing)")
    p.add_argument("--batch-size", type=int, default=4, metavar="B",
                   help="images, slices or frames per forward pass (default: %(default)s)")
    p.add_argument("--fp16", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="what runs the network: torch (a .pth checkpoint), torchscript "
                   "(model.ts) or onnxruntime (model.onnx) from tools/export_model.py, given "
                   "with --weights (default: by the --weights file's suffix)")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                   help="torch backend: fold the norm layers into the convolutions and keep "
                   "the weights channels_last (same answers up to float rounding; default: on)")
    p.add_argument("--bf16", action="store_true",
                   help="torch backend: bfloat16 autocast (faster on CPUs with AVX512-BF16/AMX; "
                   "scores move by ~1e-3)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation as in evaluation: each image run at every "
                   "TEST.AUG.MIN_SIZES short edge (each also flipped with TEST.AUG.FLIP), the "
                   "detections merged; torch backend only, about as many times slower as there "
                   "are copies (default: the config's TEST.AUG.ENABLED)")
    p.add_argument("--all-slices", action="store_true",
                   help="run every slice of a volume (default: slices without anatomy, e.g. "
                   "air above the head, are not run and get no tumor)")
    p.add_argument("--tint", action="store_true",
                   help="tint the tumor red in splashes (grey MRI has no colour to keep)")
    p.add_argument("--dicom-seg", action=argparse.BooleanOptionalAction, default=True,
                   help="write <stem>_seg.dcm (DICOM-SEG referencing the series) for DICOM "
                   "series inputs (default: on)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write <stem>_probabilities.nii.gz (float 0-1: per voxel the highest "
                   "mask probability; and a FRACTIONAL DICOM-SEG for a DICOM series)")
    p.add_argument("--min-lesion-ml", type=float, default=0.0, metavar="ML",
                   help="drop 3D lesions smaller than this (mL; default: %(default)s)")
    p.add_argument("--single-slice-min-score", type=float, default=SINGLE_SLICE_MIN_SCORE,
                   metavar="S", help="drop a 3D lesion seen on one slice only when its score is "
                   "below this (default: %(default)s; 0 keeps them)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides")
    p.add_argument("opts_tail", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    splash_batch.add_arguments(p)
    return p


def split_opts(inputs: list[str]) -> tuple[list[str], list[str]]:
    """Split trailing ``KEY VALUE`` overrides off ``--input`` or ``--weights`` (argparse cannot
    tell them apart)."""
    for i, item in enumerate(inputs):
        if CONFIG_KEY.match(item) and not Path(item).exists():
            return inputs[:i], inputs[i:]
    return inputs, []


def setup_logging() -> None:
    """Detectron2's console logging, unless the caller (e.g. the demo) set it up already."""
    import logging

    from detectron2.utils.logger import setup_logger

    for name, abbrev in (("fvcore", None), ("detectron2", "d2"), ("tumor_det", "tumor_det")):
        if not logging.getLogger(name).handlers:
            setup_logger(name=name, abbrev_name=abbrev)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.merge:
        return splash_batch.merge_main(args, PROG)
    inputs, opts = split_opts(list(args.input))
    weight_args, weight_opts = split_opts(list(args.weights or []))  # --weights W last, then KEYs
    opts += weight_opts + list(args.opts) + list(args.opts_tail)
    try:
        splash_batch.check_arguments(args)
        sources = expand_inputs(splash_batch.batch_inputs(args, inputs), args.video_input)
        if len(opts) % 2:
            raise UsageError(f"config overrides must be KEY VALUE pairs, got {opts}")
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if args.min_lesion_ml < 0:
            raise UsageError("--min-lesion-ml must not be negative")
        cfg, weights = load_config(args.config_file, opts, weight_args or None,
                                   allow_untrained=args.allow_untrained)
    except (*USER_ERRORS, FileNotFoundError, KeyError, ValueError, AssertionError) as exc:
        # yacs reports an unknown override key with an AssertionError, a file key with KeyError
        return user_error(PROG, exc)
    # the one score threshold (--confidence-threshold replaces the config's); the model itself
    # need not compute candidates below it
    cfg = with_score_threshold(cfg, args.confidence_threshold)
    filter_candidates_at_threshold(cfg)

    setup_logging()
    options = PredictorOptions(
        fp16=args.fp16, allow_untrained=args.allow_untrained,
        probabilities=args.save_probabilities, fuse=args.fast, channels_last=args.fast,
        bf16=args.bf16, skip_empty=not args.all_slices,
        tta=cfg.TEST.AUG.ENABLED if args.tta is None else args.tta)
    cluster = splash_batch.cluster(args)
    try:  # on Ray each actor builds its own
        predictor = (PredictorSpec(cfg, weights, args.backend, options) if cluster else
                     TumorPredictor.from_weights(cfg, weights, args.backend, options))
    except (ExportError, ValueError) as exc:  # a backend that cannot run these weights (or TTA)
        return user_error(PROG, exc)
    output = Path(args.output)
    status = splash(predictor, sources, output, tint=args.tint, dicom_seg=args.dicom_seg,
                    save_probabilities=args.save_probabilities, batch_size=args.batch_size,
                    rules=LesionRules(args.min_lesion_ml, args.single_slice_min_score),
                    num_parts=args.num_parts, part_id=args.part_id, resume=args.resume,
                    cluster=cluster)
    return status


def splash(predictor: TumorPredictor | PredictorSpec, sources: Sequence[Source], output: Path,
           tint: bool = False, dicom_seg: bool = True, save_probabilities: bool = False,
           batch_size: int = 4, rules: LesionRules | None = None, *, num_parts: int = 1,
           part_id: int = 0, resume: bool = False, cluster: Cluster | None = None) -> int:
    """Run ``predictor`` over ``sources`` (part ``part_id`` of ``num_parts``; ``resume``: not
    the complete ones; on Ray with ``cluster``, a :class:`PredictorSpec` then) into ``output``
    (files, done markers, and for a whole run ``results.json``/``.csv``: see
    :func:`tumor_det.splash.batch.run_batch`) and print the summary; the exit status: 0 when
    at least one input was processed, 1 when none could be (or the results could not be
    written). What :func:`main` and the demo run.
    """
    settings = SinkSettings(RED if tint else None, dicom_seg, save_probabilities)
    try:
        report = run_batch(predictor, sources, output, settings, batch_size, rules,
                           num_parts=num_parts, part_id=part_id, resume=resume, cluster=cluster)
    except (OutputError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print_summary(report, output)
    if num_parts > 1:
        print(f"\npart {part_id} of 0..{num_parts - 1}; when every part is done: "
              f"{PROG} --merge {output} --output {output}")
    elif report.rows:
        weights = getattr(getattr(predictor, "cfg", None), "MODEL", None)
        report_after_run(output, "splash", command=[PROG, *sys.argv[1:]],
                         weights=[weights.WEIGHTS] if weights and weights.WEIGHTS else [])
    return 0 if report.rows else 1


def print_summary(report: Report, output: Path) -> None:
    tumors = sum(int(r.get("tumors") or 0) for r in report.rows)
    with_tumor = sum(1 for r in report.rows if r.get("tumors"))
    print(tabulate([["processed", len(report.rows)], ["skipped", len(report.skipped)],
                    ["inputs with tumor", with_tumor], ["tumors found", tumors],
                    ["output", str(output)]], tablefmt="simple"))
    if report.skipped:
        print("\nskipped:")
        print(tabulate(report.skipped, headers=["input", "reason"], tablefmt="simple"))
    if report.warnings:
        print("\nwarnings:")
        print(tabulate(report.warnings, headers=["input", "warning"], tablefmt="simple"))
    if not report.rows:
        print("\nnothing could be processed", file=sys.stderr)
