"""``tools/export_model.py``: export the model to TorchScript/ONNX and check the files.

The command line only: :func:`tumor_det.export.tracing.export_model` writes the files; each is
then run through :class:`~tumor_det.inference.predictor.TumorPredictor`'s pre- and
post-processing beside the PyTorch model on a sample slice (``--no-check`` skips it). Exit
status: 0, 1 when an export or its check failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tumor_det.cli.common import USER_ERRORS, load_config, user_error
from tumor_det.config.config import DEFAULT_CONFIG
from tumor_det.evaluation.threshold import score_threshold, with_score_threshold
from tumor_det.export.parity import parity
from tumor_det.export.tracing import DEFAULT_OPSET, export_model, sample_image
from tumor_det.inference.backends import (
    BACKEND_OF_FORMAT,
    CONFIG,
    FORMATS,
    METADATA,
    ExportError,
    backend_for_file,
)
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io import InputError, reader_for

import numpy as np
import torch

PROG = "export_model.py"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export the Mask R-CNN to TorchScript and/or ONNX (detectron2.export "
        "tracing); run the files with tools/splash.py --weights OUTPUT/model.onnx.",
        epilog="Config overrides go last, as KEY VALUE pairs, e.g. "
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.05 (fixed in the exported graph).")
    p.add_argument("--config-file", default=str(DEFAULT_CONFIG), metavar="FILE",
                   help="Detectron2 YAML config (default: %(default)s)")
    p.add_argument("--weights", metavar="W",
                   help="checkpoint file, or last (the last checkpoint in OUTPUT_DIR)")
    p.add_argument("--output", default="output/export", metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("--format", default="both", choices=[*FORMATS, "both"],
                   help="what to write (default: %(default)s)")
    p.add_argument("--device", default=None,
                   help="cpu or cuda (default: the config's MODEL.DEVICE); a TorchScript file "
                   "runs on the device it was exported on")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 16)")
    p.add_argument("--sample-image", metavar="PATH",
                   help="image to trace with (default: a synthetic slice at the test size)")
    p.add_argument("--dump-ir", action="store_true",
                   help="also write Detectron2's TorchScript IR dumps (model_ts_*.txt)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running each exported file against the PyTorch model on the "
                   "sample image")
    p.add_argument("--allow-untrained", action="store_true",
                   help="export a model without weights (tests, benchmarks)")
    p.add_argument("opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``tools/export_model.py``: 0 on success, 1 when an export failed, 2 on a usage error."""
    args = build_parser().parse_args(argv)
    try:
        cfg, _ = load_config(args.config_file, args.opts,
                             None if args.weights is None else [args.weights],
                             device=args.device, allow_untrained=args.allow_untrained)
        if backend_for_file(cfg.MODEL.WEIGHTS):
            raise ValueError(f"{cfg.MODEL.WEIGHTS} is already an exported model: --weights "
                             "takes a PyTorch checkpoint")
        sample = None
        if args.sample_image:
            try:
                sample = reader_for(Path(args.sample_image)).read(Path(args.sample_image))
            except InputError as exc:
                raise ValueError(f"--sample-image: {exc}") from exc
            if not hasattr(sample, "pixels"):
                raise ValueError(f"--sample-image {args.sample_image}: not a 2D image")
        if args.opset < 16:
            raise ValueError(f"--opset {args.opset}: Mask R-CNN needs >= 16 (RoIAlign)")
    except (*USER_ERRORS, KeyError, ValueError, FileNotFoundError, OSError) as exc:
        return user_error(PROG, exc)
    formats = list(FORMATS) if args.format == "both" else [args.format]
    if "onnx" in formats and importlib.util.find_spec("onnx") is None:
        return user_error(PROG, "--format onnx needs the onnx package "
                                "(pip install -e '.[export]')")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # every detection the graph gives counts in the check (score threshold 0)
    predictor = TumorPredictor(with_score_threshold(cfg, 0.0),
                               PredictorOptions(allow_untrained=args.allow_untrained))
    # the exported config: the predictor's (device resolved), with the given score threshold
    cfg = with_score_threshold(predictor.cfg, score_threshold(cfg))
    image = None if sample is None else predictor.prepare(sample.pixels, rgb=sample.rgb)
    try:
        files = export_model(predictor.model, cfg, args.output, formats, image=image,
                             opset=args.opset, dump_ir=args.dump_ir)
    except (ExportError, RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
        print(f"export_model.py: export failed: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())[:500]}", file=sys.stderr)
        return 1
    for fmt, path in files.items():
        print(f"{fmt}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    print(f"config: {Path(args.output) / CONFIG}\nmetadata: {Path(args.output) / METADATA}")
    if args.no_check:
        return 0
    return 0 if _check(predictor, files, sample_image(cfg) if image is None else image) else 1


def _check(predictor, files: dict[str, Path], image: np.ndarray) -> bool:
    """Run each exported file through the predictor's pre/post-processing; print parity."""
    ref = predictor(image).instances
    ok = True
    for fmt, path in files.items():
        backend = BACKEND_OF_FORMAT[fmt]
        try:
            other = TumorPredictor.from_exported(predictor.cfg, path, backend)(image).instances
        except (ExportError, ImportError, RuntimeError) as exc:
            print(f"check {fmt}: cannot run it: {exc}")
            ok = False
            continue
        p = parity(ref, other)
        good = p["same_detections"] and (p["detections"] == 0 or (
            p["max_score_diff"] <= 1e-3 and p["min_mask_dice"] >= 0.99))
        ok &= good
        print(f"check {fmt} ({backend}) vs PyTorch on the sample image: {p['detections']} vs "
              f"{p['other_detections']} detections, max score diff {p['max_score_diff']:.2g}, "
              f"min mask Dice {p['min_mask_dice']:.4f}: {'OK' if good else 'MISMATCH'}")
    return ok
