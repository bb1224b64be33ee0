"""``tools/splash.py``: run the tumor model on images, DICOM, NIfTI and videos; write splashes.

Outputs in ``--output`` per 2D input: ``<stem>_splash.png``, ``<stem>_overlay.png``,
``<stem>_mask.png``; per volume: ``<stem>_mask.nii.gz`` and ``<stem>_splash.mp4``; per video:
``<stem>_splash.mp4``; for the whole run ``results.json`` (COCO results, RLE masks) and
``results.csv`` (one row per input). Exit status: 0 when at least one input was processed,
1 when none could be, 2 for a usage error (no such input, bad config or weights).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tumor_det.config import DEFAULT_CONFIG, get_tumor_cfg
from tumor_det.inputs import (
    InputError,
    Source,
    UsageError,
    expand_inputs,
    open_video,
    read_dicom,
    read_image,
)
from tumor_det.outputs import (
    OutputError,
    OutputGuard,
    VideoWriter,
    coco_records,
    write_csv,
    write_image,
    write_json,
    write_nifti_mask,
)
from tumor_det.predictor import TumorPrediction, TumorPredictor
from tumor_det.splash import RED, color_splash, display_scale, draw_overlay, video_frame
from tumor_det.volume import load_dicom_series, load_nifti
from tumor_det.weights import resolve_weights

import numpy as np
from detectron2.data import MetadataCatalog
from tabulate import tabulate
from tqdm import tqdm

logger = logging.getLogger("tumor_det.splash")

CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")
VOLUME_FPS = 10.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splash.py",
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
    p.add_argument("--weights", metavar="W",
                   help="checkpoint file, or last (the last checkpoint in OUTPUT_DIR); sets "
                   "MODEL.WEIGHTS")
    p.add_argument("--batch-size", type=int, default=4, metavar="B",
                   help="images, slices or frames per forward pass (default: %(default)s)")
    p.add_argument("--fp16", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--tint", action="store_true",
                   help="tint the tumor red in splashes (grey MRI has no colour to keep)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides")
    p.add_argument("opts_tail", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def split_opts(inputs: list[str]) -> tuple[list[str], list[str]]:
    """Split trailing ``KEY VALUE`` overrides off ``--input`` (argparse cannot tell them apart)."""
    for i, item in enumerate(inputs):
        if CONFIG_KEY.match(item) and not Path(item).exists():
            return inputs[:i], inputs[i:]
    return inputs, []


@dataclass
class Report:
    """What happened to each input: rows for results.csv, COCO records and skip reasons."""

    rows: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, name: str | Path, reason: str) -> None:
        logger.warning("skipped %s: %s", name, reason)
        self.skipped.append((str(name), reason))


class SplashRunner:
    """Runs the predictor over sources and writes every output."""

    def __init__(self, predictor: TumorPredictor, output: Path, guard: OutputGuard,
                 batch_size: int = 4, tint: bool = False):
        self.predictor = predictor
        self.output = output
        self.guard = guard
        self.batch_size = max(1, batch_size)
        self.tint = RED if tint else None
        self.report = Report()
        meta = MetadataCatalog.get(predictor.cfg.DATASETS.TEST[0]) if \
            predictor.cfg.DATASETS.TEST else None
        n = predictor.cfg.MODEL.ROI_HEADS.NUM_CLASSES
        self.class_names = list(meta.get("thing_classes", [])) if meta else []
        if len(self.class_names) != n:
            self.class_names = ["tumor"] if n == 1 else [f"class{i}" for i in range(n)]
        id_map = meta.get("thing_dataset_id_to_contiguous_id", None) if meta else None
        self.category_ids = {v: k for k, v in id_map.items()} if id_map else None
        self._stems: set[str] = set()
        self._image_id = 0

    def unique_stem(self, stem: str) -> str:
        candidate, n = stem, 1
        while candidate in self._stems:
            n += 1
            candidate = f"{stem}_{n}"
        self._stems.add(candidate)
        return candidate

    def run(self, sources: Sequence[Source]) -> None:
        """Process 2D inputs in batches, then volumes and videos; record every skip."""
        images = [s for s in sources if s.kind in ("image", "dicom")]
        others = [s for s in sources if s.kind not in ("image", "dicom")]
        with tqdm(total=len(sources), desc="splash", unit="input", dynamic_ncols=True) as bar:
            pending: list[tuple[Source, np.ndarray, tuple[float, float] | None]] = []
            for src in images:
                try:
                    pending.append((src, *self._read_2d(src)))
                except (InputError, ValueError, TypeError) as exc:
                    self.report.skip(src.path, str(exc))
                    bar.update(1)
                if len(pending) == self.batch_size:
                    self._images(pending, bar)
                    pending = []
            self._images(pending, bar)
            for src in others:
                try:
                    if src.kind == "unsupported":
                        raise InputError(src.reason)
                    if src.kind == "video":
                        self._video(src)
                    else:
                        self._volume(src)
                except (InputError, OutputError, OSError) as exc:
                    self.report.skip(src.path, str(exc))
                except Exception as exc:  # noqa: BLE001 - one bad scan must not end the run
                    logger.debug("%s failed", src.path, exc_info=True)
                    self.report.skip(src.path, f"failed: {type(exc).__name__}: {exc}")
                bar.update(1)

    def _read_2d(self, src: Source) -> tuple[np.ndarray, tuple[float, float] | None]:
        """The 8-bit BGR model input of a 2D source and its pixel spacing (DICOM only)."""
        if src.kind == "image":
            return self.predictor.prepare(read_image(src.path)), None
        pixels, rgb, spacing = read_dicom(src.path)
        return self.predictor.prepare(pixels, rgb=rgb), spacing

    def _images(self, batch: list[tuple[Source, np.ndarray, tuple[float, float] | None]],
                bar: tqdm) -> None:
        if not batch:
            return
        preds = self.predictor.predict_batch([item[1] for item in batch],
                                             pixel_spacing=[item[2] for item in batch])
        for (src, _, _), pred in zip(batch, preds, strict=True):
            try:
                self._write_2d(src, pred)
            except (OutputError, OSError) as exc:
                self.report.skip(src.path, str(exc))
            bar.update(1)

    def _write_2d(self, src: Source, pred: TumorPrediction) -> None:
        stem = self.unique_stem(src.stem)
        out = self.output
        inst = pred.instances
        masks = inst.pred_masks.numpy() if len(inst) else np.zeros((0, *pred.mask.shape), bool)
        write_image(out / f"{stem}_splash.png", color_splash(pred.image, pred.mask, self.tint),
                    self.guard)
        overlay = draw_overlay(pred.image, masks, pred.scores, inst.pred_classes.tolist()
                               if len(inst) else [], self.class_names)
        write_image(out / f"{stem}_overlay.png", overlay, self.guard)
        write_image(out / f"{stem}_mask.png", pred.mask.astype(np.uint8) * 255, self.guard)
        self.report.records += coco_records(pred, self._next_id(), str(src.path),
                                            self.category_ids)
        area_mm2 = pred.area_mm2
        self.report.rows.append({
            "file": str(src.path), "kind": "image", "tumors": pred.num_tumors,
            "scores": ";".join(f"{s:.3f}" for s in pred.scores), "area_px": pred.area_px,
            "area_mm2": None if area_mm2 is None else round(area_mm2, 2),
        })

    def _next_id(self) -> int:
        self._image_id += 1
        return self._image_id

    def _volume(self, src: Source) -> None:
        volume = load_nifti(src.path) if src.kind == "nifti" else load_dicom_series(src.files)
        result = self.predictor.predict_volume(volume, batch_size=self.batch_size)
        stem = self.unique_stem(src.stem)
        header = volume.header if src.kind == "nifti" else None
        write_nifti_mask(self.output / f"{stem}_mask.nii.gz", result.mask, volume.affine, header,
                         self.guard)
        first = result.slices[0].image
        scale = display_scale(first.shape)
        size = video_frame(first, scale).shape[1::-1]
        writer = VideoWriter(self.output / f"{stem}_splash.mp4", VOLUME_FPS, size, self.guard)
        ok = False
        try:
            n = len(result.slices)
            for k, pred in enumerate(result.slices):
                splash = color_splash(pred.image, pred.mask, self.tint)
                writer.write(video_frame(splash, scale, f"slice {k + 1}/{n}"))
            ok = True
        finally:
            writer.close(ok)
        image_id = self._next_id()
        for k, pred in enumerate(result.slices):
            self.report.records += coco_records(pred, image_id, str(src.path), self.category_ids,
                                                slice=k)
        rng = result.slice_range
        self.report.rows.append({
            "file": str(src.path), "kind": "volume", "tumors": result.num_tumors,
            "scores": ";".join(f"{s:.3f}" for s in result.tumor_scores),
            "area_px": result.voxels, "volume_ml": round(result.volume_ml, 4),
            "slices": "" if rng is None else f"{rng[0]}-{rng[1]}",
        })
        logger.info("%s: %d tumor(s), %.3f mL, slices %s", src.path, result.num_tumors,
                    result.volume_ml, "-" if rng is None else f"{rng[0]}-{rng[1]}")

    def _video(self, src: Source) -> None:
        cap, fps = open_video(src.path)
        stem = self.unique_stem(src.stem)
        writer: VideoWriter | None = None
        ok = False
        frames = max_tumors = 0
        hits: list[int] = []
        image_id = self._next_id()
        try:
            while True:
                batch = []
                while len(batch) < self.batch_size:
                    grabbed, frame = cap.read()
                    if not grabbed:
                        break
                    batch.append(frame)
                if not batch:
                    break
                if writer is None:
                    h, w = batch[0].shape[:2]
                    writer = VideoWriter(self.output / f"{stem}_splash.mp4", fps, (w, h),
                                         self.guard)
                for pred in self.predictor.predict_batch(batch):
                    writer.write(color_splash(pred.image, pred.mask, self.tint))
                    self.report.records += coco_records(pred, image_id, str(src.path),
                                                        self.category_ids, frame=frames)
                    if pred.num_tumors:
                        hits.append(frames)
                    max_tumors = max(max_tumors, pred.num_tumors)
                    frames += 1
            if writer is None:
                raise InputError("video has no readable frames")
            ok = True
        finally:
            cap.release()
            if writer is not None:
                writer.close(ok)
        self.report.rows.append({
            "file": str(src.path), "kind": "video", "tumors": max_tumors,
            "slices": f"{hits[0]}-{hits[-1]}" if hits else "",
        })


def setup_logging() -> None:
    from detectron2.utils.logger import setup_logger

    setup_logger(name="fvcore")
    setup_logger(name="detectron2")
    setup_logger(name="tumor_det", abbrev_name="tumor_det")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    inputs, opts = split_opts(list(args.input))
    opts += list(args.opts) + list(args.opts_tail)
    try:
        sources = expand_inputs(inputs, args.video_input)
        if len(opts) % 2:
            raise UsageError(f"config overrides must be KEY VALUE pairs, got {opts}")
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        cfg = get_tumor_cfg(args.config_file, opts)
        if args.weights is not None:
            cfg.MODEL.WEIGHTS = args.weights
        cfg.MODEL.WEIGHTS = resolve_weights(cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR)
    except (UsageError, FileNotFoundError, KeyError, ValueError, AssertionError) as exc:
        # yacs reports an unknown override key with an AssertionError, a file key with KeyError
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"splash.py: error: {message}", file=sys.stderr)
        return 2
    t = args.confidence_threshold
    if t is None:
        t = cfg.TUMOR.EVAL.SCORE_THRESHOLD
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = t
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = t
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = t

    setup_logging()
    predictor = TumorPredictor(cfg, score_threshold=t, fp16=args.fp16)
    output = Path(args.output)
    guard = OutputGuard(p for s in sources for p in s.paths)
    runner = SplashRunner(predictor, output, guard, args.batch_size, args.tint)
    runner.run(sources)
    report = runner.report
    if report.rows:
        try:
            write_json(output / "results.json", report.records, guard)
            write_csv(output / "results.csv", report.rows, guard)
        except (OutputError, OSError) as exc:
            print(f"splash.py: error: {exc}", file=sys.stderr)
            return 1
    print_summary(report, output)
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
    if not report.rows:
        print("\nnothing could be processed", file=sys.stderr)
