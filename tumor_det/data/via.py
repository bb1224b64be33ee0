"""VGG Image Annotator (VIA) 1.x / 2.x annotations -> :class:`Sample` objects.

Accepted files: the region data export (a dict keyed by ``<filename><size>``, ``regions`` as a
dict (1.x) or a list (2.x)) and VIA 2.x project files (``_via_img_metadata``). Shapes: polygon,
polyline (closed, when it has 3+ points), rect, circle and ellipse (approximated by 64-point
polygons); points have no area and are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tumor_det.data.records import (
    DatasetError,
    Instance,
    Issues,
    Sample,
    parse_name,
    tumor_type_from_label,
)
from tumor_det.data.validation import (
    IMAGE_SUFFIXES,
    clean_polygon,
    image_array,
    is_plain_8bit,
    read_checked,
    to_number,
    to_numbers,
)

import numpy as np
from shapely import affinity
from shapely.errors import ShapelyError
from shapely.geometry import Point


def find_via_json(path: Path) -> Path:
    """The VIA file: ``path`` itself, ``via_region_data.json`` in it, or its only ``*.json``."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise DatasetError(f"input not found: {path}")
    if (path / "via_region_data.json").is_file():
        return path / "via_region_data.json"
    candidates = sorted(path.glob("*.json"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DatasetError(f"no VIA .json file in {path}")
    raise DatasetError(f"several .json files in {path}; pass the VIA file as --input")


def load_via(json_path: Path) -> dict:
    """The per-image metadata dict of a VIA 1.x/2.x export or 2.x project file.

    Entries that are not objects with a ``filename`` are left to :func:`read_via` to skip; a
    non-empty file without any such entry is not a VIA file (``DatasetError``).
    """
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{json_path} is not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {json_path}: {exc}") from exc
    except RecursionError:
        raise DatasetError(f"{json_path} is nested too deeply to be a VIA file") from None
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or (data and not any(
            isinstance(v, dict) and "filename" in v for v in data.values())):
        raise DatasetError(f"{json_path} is not a VIA 1.x/2.x annotation file "
                           "(expected entries with 'filename' and 'regions')")
    return data


def _shape_numbers(shape: dict, keys: tuple[str, ...]) -> list[float]:
    values = []
    for key in keys:
        if key not in shape:
            raise ValueError(f"no {key!r}")
        try:
            values.append(to_number(shape[key]))
        except ValueError as exc:
            raise ValueError(f"{key!r}: {exc}") from None
    return values


def shape_points(shape: dict) -> tuple[list[float], list[float]] | str:
    """The outline ``(xs, ys)`` of a VIA shape, or a reason why it has none.

    Coordinates are numbers (or numeric strings); polygons need as many x as y values.
    """
    name = shape.get("name")
    try:
        if name in ("polygon", "polyline"):
            xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
            for key, values in (("all_points_x", xs), ("all_points_y", ys)):
                if not isinstance(values, list):
                    return f"{name} shape: {key} is {type(values).__name__}, not a list"
            if len(xs) != len(ys):
                return (f"{name} shape: all_points_x and all_points_y have different lengths "
                        f"({len(xs)} and {len(ys)})")
            xs = to_numbers(xs, "all_points_x")
            ys = to_numbers(ys, "all_points_y")
            return xs.tolist(), ys.tolist()
        if name == "rect":
            x, y, w, h = _shape_numbers(shape, ("x", "y", "width", "height"))
            return [x, x + w, x + w, x], [y, y, y + h, y + h]
        if name in ("circle", "ellipse"):
            keys = ("cx", "cy", "r", "r") if name == "circle" else ("cx", "cy", "rx", "ry")
            cx, cy, rx, ry = _shape_numbers(shape, keys)
            theta = _shape_numbers(shape, ("theta",))[0] if "theta" in shape else 0.0
            if not all(np.isfinite([cx, cy, rx, ry, theta])):
                return f"{name} shape has non-finite values"
            if rx == 0 or ry == 0:
                return f"{name} shape has no area (radius 0)"
            try:
                outline = affinity.scale(Point(cx, cy).buffer(1.0, quad_segs=16), rx, ry)
                outline = affinity.rotate(outline, theta, origin=(cx, cy), use_radians=True)
            except ShapelyError as exc:  # e.g. radii near the float limit
                return f"{name} shape cannot be drawn ({exc})"
            if outline.is_empty:
                return f"{name} shape has no area"
            xs, ys = np.asarray(outline.exterior.coords)[:-1].T
            return xs.tolist(), ys.tolist()
    except ValueError as exc:
        return f"{name} shape without valid coordinates ({exc})"
    if name == "point":
        return "shape 'point' has no area"
    return f"unknown shape {name!r}"


def _type_in(attributes: object) -> str | None:
    if isinstance(attributes, dict):
        for value in attributes.values():
            found = _type_in(value) if isinstance(value, dict) else tumor_type_from_label(value)
            if found:
                return found
    return None


def read_via(input_path: Path, image_root: Path | None, issues: Issues,
             patient_regex: str | None = None) -> Iterator[Sample]:
    """One :class:`Sample` per VIA entry whose image is readable (others are skipped).

    Also reports images in the folder that the VIA file does not mention.
    """
    json_path = find_via_json(Path(input_path))
    entries = load_via(json_path)
    root = Path(image_root) if image_root else json_path.parent
    listed = set()
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            issues.skip(f"entry {key}", "not a VIA image entry (an object with a 'filename')")
            continue
        name = entry["filename"]
        if not isinstance(name, str) or not name:
            issues.skip(f"entry {key}", f"filename {name!r} is not a file name")
            continue
        item = name
        if name in listed:
            issues.skip(f"{name} (entry {key})", "duplicate file name in the VIA file")
            continue
        listed.add(name)
        regions = entry.get("regions") or []
        if isinstance(regions, dict):
            regions = [regions[k] for k in sorted(regions, key=lambda k: (len(k), k))]
        if not isinstance(regions, list):
            issues.skip(item, f"'regions' is {type(regions).__name__}, not a list or object "
                              "of regions")
            continue
        image = read_checked(root / name, item, issues)
        if image is None:
            continue
        width, height = image.size
        meta = parse_name(Path(name).stem, patient_regex)
        instances = []
        for index, region in enumerate(regions):
            region_item = f"{name} region {index}"
            shape = region.get("shape_attributes") if isinstance(region, dict) else None
            if not isinstance(shape, dict):
                what = "region" if not isinstance(region, dict) else "shape_attributes"
                issues.skip(region_item, f"{what} is not an object")
                continue
            points = shape_points(shape)
            if isinstance(points, str):
                issues.skip(region_item, points)
                continue
            polygons = clean_polygon(*points, width, height, region_item, issues)
            if polygons:
                instances.append(Instance(polygons=polygons, source=region_item,
                                          tumor_type=_type_in(region.get("region_attributes"))))
        plain = is_plain_8bit(image)
        yield Sample(
            source=name, file_name=name if plain else str(Path(name).with_suffix(".png")),
            patient_id=meta["patient_id"], width=width, height=height, instances=instances,
            image_path=root / name, copy_as_is=plain,
            pixels=lambda image=image: image_array(image),
            tumor_type=_type_in(entry.get("file_attributes")) or meta.get("tumor_type"),
            extra={"slice_index": meta["slice_index"]} if "slice_index" in meta else {},
        )
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() in IMAGE_SUFFIXES and rel not in listed and path.is_file():
            issues.skip(rel, f"image in {root} is not in {json_path.name}")
