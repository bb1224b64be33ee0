"""Checks and repairs shared by the readers: images, polygons, masks and their components.

Coordinates follow COCO: pixel ``(row r, column c)`` covers ``[c, c+1] x [r, r+1]``.
"""

from __future__ import annotations

from pathlib import Path

from tumor_det.data.records import Issues
from tumor_det.io.image2d import open_complete

import numpy as np
import shapely
from PIL import Image
from scipy import ndimage
from shapely.geometry import Polygon
from shapely.validation import explain_validity, make_valid

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def image_array(image: Image.Image) -> np.ndarray:
    """The pixels of a PIL image as numpy: 2D for grey (any bit depth), HxWx3 for colour."""
    if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA"):
        image = image.convert("RGB")
    elif image.mode == "LA":
        image = image.convert("L")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return array


def is_plain_8bit(image: Image.Image) -> bool:
    """A JPEG/PNG in 8-bit grey or RGB, which the dataset keeps byte for byte."""
    return image.format in ("JPEG", "PNG") and image.mode in ("L", "RGB")


def read_checked(path: Path, item: str, issues: Issues) -> Image.Image | None:
    """:func:`tumor_det.io.open_complete` (the truncation check inference uses too) that
    records a skip instead of raising."""
    try:
        found = path.is_file()
    except (OSError, ValueError) as exc:  # a name too long for the file system, ...
        issues.skip(item, f"unusable image path: {exc}")
        return None
    if not found:
        issues.skip(item, f"image file not found: {path}")
        return None
    try:
        return open_complete(path)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        # OSError/SyntaxError (truncated, unknown format), DecompressionBombError (a header
        # claiming billions of pixels), struct.error, ValueError, ZeroDivisionError...
        issues.skip(item, f"unreadable or truncated image {path.name}: "
                          f"{_one_line(exc)}")
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def to_number(value: object) -> float:
    """``value`` as a float: ints, floats and numeric strings; ``ValueError`` otherwise
    (booleans, lists, dicts, None, text, ints too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{_short(value)} is not a number")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{_short(value)} is not a number") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def to_numbers(values: object, what: str) -> np.ndarray:
    """A list of numbers (see :func:`to_number`) as a float array; ``ValueError`` naming
    ``what`` when it is not a list or holds something else."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{what} is {_short(values)}, not a list of numbers")
    try:
        return np.array([to_number(v) for v in values], dtype=float)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _polygon_parts(geometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    if hasattr(geometry, "geoms"):
        return [p for g in geometry.geoms for p in _polygon_parts(g)]
    return []  # points and lines have no area


def clean_polygon(xs, ys, width: int, height: int, item: str, issues: Issues,
                  ) -> list[list[float]] | None:
    """Validate one outline; return COCO polygons (repaired/clipped) or ``None`` (skipped).

    Rules: numbers (numeric strings accepted), as many x as y; at least 3 distinct points;
    finite; inside the image (clipped with a warning); non-zero area; simple
    (self-intersections repaired with shapely's ``make_valid``).
    """
    try:
        xs, ys = to_numbers(xs, "x coordinates"), to_numbers(ys, "y coordinates")
    except ValueError as exc:
        issues.skip(item, f"polygon coordinates are not numbers ({exc})")
        return None
    if len(xs) != len(ys):
        issues.skip(item, f"polygon has {len(xs)} x and {len(ys)} y coordinates "
                          "(different lengths)")
        return None
    points = np.column_stack([xs, ys])
    if points.ndim != 2 or len(points) == 0:
        issues.skip(item, "polygon has no points")
        return None
    if not np.isfinite(points).all():
        issues.skip(item, "polygon has non-finite coordinates")
        return None
    keep = np.ones(len(points), bool)
    keep[1:] = np.any(np.diff(points, axis=0) != 0, axis=1)
    points = points[keep]
    if len(points) > 1 and np.array_equal(points[0], points[-1]):
        points = points[:-1]
    if len(points) < 3:
        issues.skip(item, f"polygon has {len(points)} distinct point(s), needs at least 3")
        return None
    outside = ((points[:, 0] < 0) | (points[:, 0] > width)
               | (points[:, 1] < 0) | (points[:, 1] > height))
    if outside.any():
        issues.warn(item, f"{int(outside.sum())} polygon point(s) outside the {width}x{height} "
                          "image clipped to its border")
        points = np.column_stack([np.clip(points[:, 0], 0, width),
                                  np.clip(points[:, 1], 0, height)])
    polygon = Polygon(points)
    if polygon.is_valid and polygon.area > 0:
        return [points.ravel().tolist()]
    reason = explain_validity(polygon)
    parts = [p for p in _polygon_parts(make_valid(polygon)) if p.area > 0]
    if not parts:
        issues.skip(item, f"zero-area polygon ({reason})")
        return None
    issues.warn(item, f"invalid polygon ({reason}) repaired into {len(parts)} part(s)")
    return [np.asarray(p.exterior.coords)[:-1].ravel().tolist() for p in parts]


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected components of a binary mask, largest first, as boolean masks."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), int))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    return [labels == (index + 1) for index in np.argsort(-sizes, kind="stable")]


def mask_to_polygons(mask: np.ndarray) -> tuple[list[list[float]], int]:
    """Exact pixel-edge outlines of a binary mask, and how many holes they leave out.

    The outlines follow pixel borders, so pycocotools rasterises them back to the same pixels
    (holes aside: COCO polygons cannot hold them).
    """
    boxes = []
    for row in np.flatnonzero(mask.any(axis=1)):
        edges = np.diff(np.concatenate([[0], mask[row].astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        boxes.append(shapely.box(starts, row, ends, row + 1))
    if not boxes:
        return [], 0
    union = shapely.union_all(np.concatenate(boxes)).simplify(0)
    parts = _polygon_parts(union)
    holes = sum(len(p.interiors) for p in parts)
    return [np.asarray(p.exterior.coords)[:-1].ravel().tolist() for p in parts], holes
