"""Write inference outputs atomically and never over an input; COCO result records.

Every file is written to a temporary name in its destination folder and moved into place with
``os.replace``, so a reader (or an interrupted run) never sees a half-written file. An
:class:`OutputGuard` knows the input files and refuses an output path that is one of them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tumor_det.utils.atomic import atomic_path as _atomic_path

import cv2
import numpy as np

CSV_FIELDS = ("file", "kind", "tumors", "scores", "area_px", "area_mm2", "volume_ml", "slices")
#: ``<stem>_lesions.csv``: one row per 3D lesion (centroid in RAS+ mm).
LESION_FIELDS = ("id", "class", "category_id", "score", "voxels", "volume_ml", "slices",
                 "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")


class OutputError(Exception):
    """An output that must not be written (it would replace an input)."""


class OutputGuard:
    """Refuses output paths that resolve to an input file."""

    def __init__(self, inputs: Iterable[Path]):
        self._inputs = {os.path.realpath(p) for p in inputs}

    def check(self, path: Path) -> Path:
        if os.path.realpath(path) in self._inputs:
            raise OutputError(f"refusing to overwrite input file {path}")
        return path


@contextmanager
def atomic_path(path: Path, guard: OutputGuard | None = None) -> Iterator[Path]:
    """:func:`tumor_det.utils.atomic.atomic_path`, refusing paths the ``guard`` knows as inputs."""
    if guard is not None:
        guard.check(path)
    with _atomic_path(path) as tmp:
        yield tmp


def write_bytes(path: Path, data: bytes, guard: OutputGuard | None = None) -> Path:
    with atomic_path(path, guard) as tmp:
        tmp.write_bytes(data)
    return path


def write_image(path: Path, image: np.ndarray, guard: OutputGuard | None = None) -> Path:
    """Encode with OpenCV by ``path``'s suffix and write atomically."""
    ok, buf = cv2.imencode(Path(path).suffix, image)
    if not ok:
        raise OSError(f"cannot encode {path}")
    return write_bytes(path, buf.tobytes(), guard)


def write_json(path: Path, obj: Any, guard: OutputGuard | None = None) -> Path:
    return write_bytes(path, json.dumps(obj, indent=1).encode(), guard)


def write_csv(path: Path, rows: Iterable[dict], guard: OutputGuard | None = None,
              fields: Sequence[str] = CSV_FIELDS) -> Path:
    """``fields`` columns (default: results.csv's); a missing or None value is empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return write_bytes(path, buf.getvalue().encode(), guard)


class VideoWriter:
    """``cv2.VideoWriter`` ('mp4v') to a temporary file, moved into place by :meth:`close`."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int],
                 guard: OutputGuard | None = None):
        self.path = Path(path)
        self._ctx = atomic_path(self.path, guard)
        tmp = self._ctx.__enter__()
        self._writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            self._ctx.__exit__(OSError, None, None)
            raise OSError(f"cannot open a video writer for {path}")
        self.size = size

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_NEAREST)
        self._writer.write(frame)

    def close(self, ok: bool = True) -> None:
        """Finish the file; ``ok=False`` discards it."""
        self._writer.release()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("discarded"), None)


def rle(mask: np.ndarray) -> dict:
    """COCO RLE of a bool HxW mask, ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_util

    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def coco_records(prediction, image_id: int, file_name: str,
                 category_ids: dict[int, int] | None = None, **extra: Any) -> list[dict]:
    """COCO results (one dict per instance) for a
    :class:`~tumor_det.inference.results.TumorPrediction`.

    Detectron2's ``instances_to_coco_json`` (what ``COCOEvaluator`` writes: XYWH ``bbox``, RLE
    ``segmentation`` with ``counts`` as str) plus ``file_name`` and ``extra`` (``slice``,
    ``frame``); ``category_ids`` maps its contiguous class indices to dataset ids (default:
    index + 1). bbox is rounded to 0.01 px and score to 5 decimals.
    """
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    records = []
    for record in instances_to_coco_json(prediction.instances, image_id):
        cls = record["category_id"]
        records.append({
            "image_id": image_id,
            "file_name": file_name,
            **extra,
            "category_id": (category_ids or {}).get(cls, cls + 1),
            "bbox": [round(float(v), 2) for v in record["bbox"]],
            "score": round(float(record["score"]), 5),
            "segmentation": record["segmentation"],
        })
    return records
