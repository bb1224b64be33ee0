"""What the format readers hand to the writer: samples, instances and the issues met on the way."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

#: The three tumor types of the Figshare release (label 1, 2, 3) and of ``--classes type``.
TUMOR_TYPES = ("meningioma", "glioma", "pituitary")
#: ``<label>---<patient>-i<slice>`` (the seed data and the Figshare-derived VIA example).
NAME_PATTERN = re.compile(r"^(?P<label>[^-]+)---(?P<patient>.+?)-i(?P<slice>\d+)$")


_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r"})


def one_line(text: object) -> str:
    """``text`` with line breaks written as ``\\n``/``\\r`` (file names may hold them)."""
    return str(text).translate(_LINE_BREAKS)


class DatasetError(ValueError):
    """The input as a whole is unusable (missing path, unparsable file, nothing usable).

    Its message is one line (the tools print it as ``<tool>: error: <message>``).
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(message), *args)


@dataclass
class Instance:
    """One tumor: an outline, ``polygons`` (flat ``[x0, y0, x1, y1, ...]`` lists) or a ``mask``;
    or, box-only (e.g. YOLO labels), just ``bbox`` ``(x, y, width, height)`` in pixels.

    An outline wins over ``bbox`` (the annotation's box is then computed from the outline).
    """

    polygons: list[list[float]] | None = None
    mask: np.ndarray | None = None
    bbox: tuple[float, float, float, float] | None = None
    tumor_type: str | None = None
    iscrowd: int = 0
    source: str | None = None  # names the instance in messages


@dataclass
class Sample:
    """One 2D image and its instances, as read from any format.

    ``source`` names the item in messages; ``file_name`` is the path under ``<out>/images``.
    The pixels come from ``image_path`` (copied as is when ``copy_as_is``) or ``pixels()``.
    ``extra`` goes into the COCO image entry (``slice_index``, ``pixel_spacing``...);
    ``empty_reason`` is the skip reason when no instance is left, unless ``tumor_free``: an
    image known to hold no tumor (an empty YOLO label file, a folder of tumor-free images),
    kept as a negative (a COCO image without annotations) even without ``--keep-negatives``.
    """

    source: str
    file_name: str
    patient_id: str
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)
    image_path: Path | None = None
    copy_as_is: bool = False
    pixels: Callable[[], np.ndarray] | None = None
    tumor_type: str | None = None
    extra: dict = field(default_factory=dict)
    empty_reason: str = "no valid tumor outline"
    tumor_free: bool = False


@dataclass
class Issues:
    """Skipped items and warnings, logged as they happen and listed in the summary."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    dropped_negatives: int = 0

    def skip(self, item: str, reason: str) -> None:
        item, reason = one_line(item), one_line(reason)
        LOG.warning("%s: skipped: %s", item, reason)
        self.skipped.append((item, reason))

    def warn(self, item: str, message: str) -> None:
        item, message = one_line(item), one_line(message)
        LOG.warning("%s: %s", item, message)
        self.warnings.append((item, message))


def tumor_type_from_label(label: object) -> str | None:
    """``1``/``"1.0"``/``"meningioma"`` -> ``"meningioma"`` etc.; ``None`` when unknown."""
    text = str(label).strip().lower()
    for name in TUMOR_TYPES:
        if text.startswith(name):
            return name
    try:
        number = float(text)
    except ValueError:
        return None
    if number in (1.0, 2.0, 3.0):
        return TUMOR_TYPES[int(number) - 1]
    return None


def parse_name(stem: str, patient_regex: str | None = None) -> dict:
    """Patient, tumor type and slice from a file stem (``<label>---<patient>-i<slice>``).

    ``patient_regex`` (a regular expression with a ``patient`` group, searched in the stem)
    overrides the pattern; without a match the patient is the stem itself.
    """
    if patient_regex:
        found = re.search(patient_regex, stem)
        return {"patient_id": found.group("patient") if found else stem}
    found = NAME_PATTERN.match(stem)
    if not found:
        return {"patient_id": stem}
    return {"patient_id": found.group("patient"), "slice_index": int(found.group("slice")),
            "tumor_type": tumor_type_from_label(found.group("label"))}
