"""Where splash results go: images, masks, label maps, DICOM-SEG, videos and the run's tables.

:class:`SplashSink` names the outputs of each input (``<stem>_...``, made unique within a run),
writes them atomically and never over an input (:class:`~tumor_det.splash.writers.OutputGuard`), and
collects the COCO records, the CSV rows, the skip reasons and warnings of the run
(:class:`Report`). A volume gets, in the input's grid: ``<stem>_mask.nii.gz`` (0/1),
``<stem>_instances.nii.gz`` (lesion ids 1..N by score), ``<stem>_classes.nii.gz`` (dataset
category id of each lesion's class; models with several classes), ``<stem>_probabilities.nii.gz``
(``save_probabilities``), ``<stem>_lesions.csv``, ``<stem>_splash.mp4``; a DICOM series also
``<stem>_seg.dcm`` (BINARY DICOM-SEG, a segment per class) and with probabilities
``<stem>_seg_probabilities.dcm`` (FRACTIONAL).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tumor_det.data import register_all
from tumor_det.io import InputError, reader_for
from tumor_det.io.dicom import DicomSeries
from tumor_det.splash.drawing import color_splash, display_scale, draw_overlay, video_frame
from tumor_det.splash.results import ImageResult, VideoResult, VolumeResult
from tumor_det.splash.writers import (
    LESION_FIELDS,
    OutputGuard,
    VideoWriter,
    coco_records,
    write_csv,
    write_image,
    write_json,
)

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

logger = logging.getLogger("tumor_det.splash.drawing")

VOLUME_FPS = 10.0


def class_metadata(cfg: CfgNode) -> tuple[list[str], dict[int, int] | None]:
    """Class names and contiguous index -> dataset category id, from ``DATASETS.TEST[0]``.

    The datasets under ``TUMOR.DATASETS_ROOT`` are registered first (splash loads none); the
    names and ids come from the metadata Detectron2 keeps after loading the dataset, else from
    the ``categories`` of its COCO file (sorted by id, as ``load_coco_json`` orders them), so a
    dataset with ids 5, 7, 9 maps back to them. Without either (or when they disagree with
    ``NUM_CLASSES``): ``tumor`` or ``class<i>``, and ids ``index + 1``.
    """
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    names: list[str] = []
    ids: dict[int, int] | None = None
    if cfg.DATASETS.TEST:
        register_all(cfg.TUMOR.DATASETS_ROOT or None)
        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        names = list(meta.get("thing_classes", []))
        id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
        ids = {v: k for k, v in id_map.items()} if id_map else None
        json_file = meta.get("json_file", None)
        if not names and json_file and Path(json_file).is_file():
            try:
                categories = sorted(json.loads(Path(json_file).read_text())["categories"],
                                    key=lambda c: c["id"])
                names = [str(c["name"]) for c in categories]
                ids = {k: int(c["id"]) for k, c in enumerate(categories)}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("%s: no class names from its categories (%s)", json_file, exc)
    if len(names) != n:
        names = ["tumor"] if n == 1 else [f"class{i}" for i in range(n)]
        ids = None
    return names, ids


@dataclass
class Report:
    """What happened to each input: rows for results.csv, COCO records and skip reasons."""

    rows: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # an output left out


def _scores(scores: list[float]) -> str:
    return ";".join(f"{s:.3f}" for s in scores)


def _range(first_last: tuple[int, int] | None) -> str:
    return "" if first_last is None else f"{first_last[0]}-{first_last[1]}"


class SplashSink:
    """Writes each result's files into ``output`` and collects the run's report."""

    def __init__(self, output: Path, guard: OutputGuard, class_names: list[str],
                 category_ids: dict[int, int] | None = None,
                 tint: tuple[int, int, int] | None = None, dicom_seg: bool = True,
                 save_probabilities: bool = False):
        self.output = Path(output)
        self.guard = guard
        self.class_names = class_names
        self.category_ids = category_ids
        self.tint = tint
        self.dicom_seg = dicom_seg
        self.save_probabilities = save_probabilities
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

    def category_id(self, class_index: int) -> int:
        return (self.category_ids or {}).get(class_index, class_index + 1)

    def _class_name(self, class_index: int) -> str:
        names = self.class_names
        return names[class_index] if 0 <= class_index < len(names) else str(class_index)

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
        """The volume's NIfTI maps, lesion table, DICOM-SEG (DICOM series) and splash video."""
        src, pred = result.source, result.prediction
        stem = self.unique_stem(src.stem)
        out = self.output
        self._write_seg(result, pred.mask, out / f"{stem}_mask.nii.gz", result.volume)
        self._write_seg(result, pred.labels, out / f"{stem}_instances.nii.gz", result.volume)
        if len(self.class_names) > 1:
            self._write_seg(result, pred.lesion_map.class_map(
                {c: self.category_id(c) for c in range(len(self.class_names))}),
                out / f"{stem}_classes.nii.gz", result.volume)
        if self.save_probabilities and pred.probabilities is not None:
            self._write_seg(result, pred.probabilities, out / f"{stem}_probabilities.nii.gz",
                            result.volume)
        write_csv(out / f"{stem}_lesions.csv", self.lesion_rows(pred), self.guard,
                  LESION_FIELDS)
        if self.dicom_seg and isinstance(result.volume, DicomSeries):
            self.write_dicom_seg(result, stem)
        self._write_volume_video(pred, out / f"{stem}_splash.mp4")
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

    def lesion_rows(self, pred) -> list[dict]:
        """``<stem>_lesions.csv`` rows: one per lesion, in id order."""
        return [{
            "id": les.id, "class": self._class_name(les.class_index),
            "category_id": self.category_id(les.class_index), "score": round(les.score, 5),
            "voxels": les.voxels, "volume_ml": round(les.volume_ml, 4),
            "slices": _range(les.slices), "centroid_x_mm": les.centroid_mm[0],
            "centroid_y_mm": les.centroid_mm[1], "centroid_z_mm": les.centroid_mm[2],
        } for les in pred.lesions]

    def write_dicom_seg(self, result: VolumeResult, stem: str) -> None:
        """``<stem>_seg.dcm`` (BINARY, a segment per class) and, with probabilities,
        ``<stem>_seg_probabilities.dcm`` (FRACTIONAL); a failure is a warning, not a skip."""
        from tumor_det.io.dicom_seg import write_dicom_seg, write_probability_seg

        pred, series = result.prediction, result.volume
        segments = pred.lesion_map.class_map({c: c + 1 for c in range(len(self.class_names))})
        try:
            write_dicom_seg(segments, self.guard.check(self.output / f"{stem}_seg.dcm"),
                            series, self.class_names)
            if self.save_probabilities and pred.probabilities is not None:
                write_probability_seg(
                    pred.probabilities,
                    self.guard.check(self.output / f"{stem}_seg_probabilities.dcm"), series)
        except (ValueError, TypeError, AttributeError, InputError) as exc:
            # highdicom refuses sources it cannot reference (no FrameOfReferenceUID, ...)
            logger.warning("%s: no DICOM-SEG: %s", result.source.path, exc)
            self.report.warnings.append((str(result.source.path), f"no DICOM-SEG: {exc}"))

    def _write_volume_video(self, pred, path: Path) -> None:
        """One frame per display slice."""
        first = pred.slices[0].image
        scale = display_scale(first.shape)
        size = video_frame(first, scale).shape[1::-1]
        writer = VideoWriter(path, VOLUME_FPS, size, self.guard)
        ok = False
        try:
            n = len(pred.slices)
            for k, sl in enumerate(pred.slices):
                splash = color_splash(sl.image, sl.mask, self.tint)
                writer.write(video_frame(splash, scale, f"slice {k + 1}/{n}"))
            ok = True
        finally:
            writer.close(ok)

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
