"""Where splash results go: images, masks, videos, results.json and results.csv.

:class:`SplashSink` names the outputs of each input (``<stem>_...``, made unique within a run),
writes them atomically and never over an input (:class:`~tumor_det.outputs.OutputGuard`), and
collects the COCO records, the CSV rows and the skip reasons of the run (:class:`Report`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tumor_det.io import InputError, reader_for
from tumor_det.outputs import (
    OutputGuard,
    VideoWriter,
    coco_records,
    write_csv,
    write_image,
    write_json,
)
from tumor_det.splash import color_splash, display_scale, draw_overlay, video_frame
from tumor_det.splash_run import ImageResult, VideoResult, VolumeResult

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

logger = logging.getLogger("tumor_det.splash")

VOLUME_FPS = 10.0


def class_metadata(cfg: CfgNode) -> tuple[list[str], dict[int, int] | None]:
    """Class names and contiguous index -> dataset id, from ``DATASETS.TEST[0]``'s metadata.

    Without metadata (or when it disagrees with ``NUM_CLASSES``): ``tumor`` or ``class<i>``,
    and ids ``index + 1``.
    """
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else None
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    names = list(meta.get("thing_classes", [])) if meta else []
    if len(names) != n:
        names = ["tumor"] if n == 1 else [f"class{i}" for i in range(n)]
    id_map = meta.get("thing_dataset_id_to_contiguous_id", None) if meta else None
    return names, ({v: k for k, v in id_map.items()} if id_map else None)


@dataclass
class Report:
    """What happened to each input: rows for results.csv, COCO records and skip reasons."""

    rows: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _scores(scores: list[float]) -> str:
    return ";".join(f"{s:.3f}" for s in scores)


def _range(first_last: tuple[int, int] | None) -> str:
    return "" if first_last is None else f"{first_last[0]}-{first_last[1]}"


class SplashSink:
    """Writes each result's files into ``output`` and collects the run's report."""

    def __init__(self, output: Path, guard: OutputGuard, class_names: list[str],
                 category_ids: dict[int, int] | None = None,
                 tint: tuple[int, int, int] | None = None):
        self.output = Path(output)
        self.guard = guard
        self.class_names = class_names
        self.category_ids = category_ids
        self.tint = tint
        self.report = Report()
        self._stems: set[str] = set()
        self._image_id = 0

    def skip(self, name: str | Path, reason: str) -> None:
        logger.warning("skipped %s: %s", name, reason)
        self.report.skipped.append((str(name), reason))

    def unique_stem(self, stem: str) -> str:
        candidate, n = stem, 1
        while candidate in self._stems:
            n += 1
            candidate = f"{stem}_{n}"
        self._stems.add(candidate)
        return candidate

    def _next_id(self) -> int:
        self._image_id += 1
        return self._image_id

    def _records(self, pred, image_id: int, source, **extra) -> None:
        self.report.records += coco_records(pred, image_id, str(source.path), self.category_ids,
                                            **extra)

    def _write_seg(self, result, mask: np.ndarray, path: Path, like) -> None:
        reader_for(result.source.kind).write_seg(mask, self.guard.check(path), like)

    def write_image(self, result: ImageResult) -> None:
        """``<stem>_splash.png``, ``<stem>_overlay.png``, ``<stem>_mask.png`` (0/255)."""
        src, pred = result.source, result.prediction
        stem = self.unique_stem(src.stem)
        inst = pred.instances
        masks = inst.pred_masks.numpy() if len(inst) else np.zeros((0, *pred.mask.shape), bool)
        write_image(self.output / f"{stem}_splash.png",
                    color_splash(pred.image, pred.mask, self.tint), self.guard)
        overlay = draw_overlay(pred.image, masks, pred.scores,
                               inst.pred_classes.tolist() if len(inst) else [], self.class_names)
        write_image(self.output / f"{stem}_overlay.png", overlay, self.guard)
        self._write_seg(result, pred.mask, self.output / f"{stem}_mask.png", None)
        self._records(pred, self._next_id(), src)
        area_mm2 = pred.area_mm2
        self.report.rows.append({
            "file": str(src.path), "kind": "image", "tumors": pred.num_tumors,
            "scores": _scores(pred.scores), "area_px": pred.area_px,
            "area_mm2": None if area_mm2 is None else round(area_mm2, 2),
        })

    def write_volume(self, result: VolumeResult) -> None:
        """``<stem>_mask.nii.gz`` in the input's grid; ``<stem>_splash.mp4``, a frame a slice."""
        src, pred = result.source, result.prediction
        stem = self.unique_stem(src.stem)
        self._write_seg(result, pred.mask, self.output / f"{stem}_mask.nii.gz", result.volume)
        first = pred.slices[0].image
        scale = display_scale(first.shape)
        size = video_frame(first, scale).shape[1::-1]
        writer = VideoWriter(self.output / f"{stem}_splash.mp4", VOLUME_FPS, size, self.guard)
        ok = False
        try:
            n = len(pred.slices)
            for k, sl in enumerate(pred.slices):
                splash = color_splash(sl.image, sl.mask, self.tint)
                writer.write(video_frame(splash, scale, f"slice {k + 1}/{n}"))
            ok = True
        finally:
            writer.close(ok)
        image_id = self._next_id()
        for k, sl in enumerate(pred.slices):
            self._records(sl, image_id, src, slice=k)
        rng = _range(pred.slice_range)
        self.report.rows.append({
            "file": str(src.path), "kind": "volume", "tumors": pred.num_tumors,
            "scores": _scores(pred.tumor_scores), "area_px": pred.voxels,
            "volume_ml": round(pred.volume_ml, 4), "slices": rng,
        })
        logger.info("%s: %d tumor(s), %.3f mL, slices %s", src.path, pred.num_tumors,
                    pred.volume_ml, rng or "-")

    def write_video(self, result: VideoResult) -> None:
        """``<stem>_splash.mp4``: the input's size and frame rate, one splash per frame."""
        src = result.source
        stem = self.unique_stem(src.stem)
        writer: VideoWriter | None = None
        ok = False
        max_tumors = 0
        hits: list[int] = []
        image_id = self._next_id()
        try:
            for k, pred in enumerate(result.frames):
                if writer is None:
                    h, w = pred.image.shape[:2]
                    writer = VideoWriter(self.output / f"{stem}_splash.mp4", result.video.fps,
                                         (w, h), self.guard)
                writer.write(color_splash(pred.image, pred.mask, self.tint))
                self._records(pred, image_id, src, frame=k)
                if pred.num_tumors:
                    hits.append(k)
                max_tumors = max(max_tumors, pred.num_tumors)
            if writer is None:
                raise InputError("video has no readable frames")
            ok = True
        finally:
            result.video.close()
            if writer is not None:
                writer.close(ok)
        self.report.rows.append({
            "file": str(src.path), "kind": "video", "tumors": max_tumors,
            "slices": _range((hits[0], hits[-1]) if hits else None),
        })

    def write_results(self) -> None:
        """``results.json`` (COCO records) and ``results.csv`` (one row per input)."""
        write_json(self.output / "results.json", self.report.records, self.guard)
        write_csv(self.output / "results.csv", self.report.rows, self.guard)
