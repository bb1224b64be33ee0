"""COCO instances: read and normalise an existing file, build annotations, write files atomically.

Masks and RLE go through pycocotools; every annotation's ``area`` and ``bbox`` are recomputed
from its rasterised mask, so they always agree with the segmentation.
"""

from __future__ import annotations

import json
import shutil
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
    clean_polygon,
    image_array,
    is_plain_8bit,
    read_checked,
    to_numbers,
)
from tumor_det.data.validation import mask_to_polygons as _mask_to_polygons
from tumor_det.io.intensity import to_uint8
from tumor_det.utils.atomic import atomic_path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

#: A given bbox may differ from the mask's by this many pixels before a warning.
BBOX_TOLERANCE = 1.0


def write_image(sample: Sample, dest: Path) -> None:
    """Copy (8-bit JPEG/PNG) or convert (others, via ``to_uint8``) to ``dest``, atomically."""
    with atomic_path(dest) as tmp:
        if sample.copy_as_is:
            shutil.copyfile(sample.image_path, tmp)
            return
        array = np.asarray(sample.pixels())
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim == 3:
            array = array[:, :, :3]
        Image.fromarray(to_uint8(array)).save(tmp, format="PNG")


def instance_rle(instance: Instance, height: int, width: int) -> dict:
    """The compressed RLE of an instance's polygons or mask."""
    if instance.mask is not None:
        return mask_util.encode(np.asfortranarray(instance.mask.astype(np.uint8)))
    return mask_util.merge(mask_util.frPyObjects(instance.polygons, height, width))


def build_annotation(instance: Instance, height: int, width: int, mask_format: str,
                     item: str, issues: Issues) -> dict | None:
    """A COCO annotation (without ids) or ``None`` when the instance covers no pixel."""
    rle = instance_rle(instance, height, width)
    area = float(mask_util.area(rle))
    if area == 0:
        issues.skip(item, "empty mask: the outline covers no pixel")
        return None
    bbox = [float(v) for v in mask_util.toBbox(rle)]
    if instance.polygons is not None:
        segmentation = instance.polygons
    elif mask_format == "polygon" and not instance.iscrowd:
        segmentation, holes = _mask_to_polygons(instance.mask)
        if holes:
            issues.warn(item, f"{holes} hole(s) filled: COCO polygons cannot hold holes "
                              "(use --mask-format rle to keep them)")
    else:
        segmentation = {"size": [int(v) for v in rle["size"]],
                        "counts": rle["counts"].decode("ascii")}
    return {"segmentation": segmentation, "area": area, "bbox": bbox,
            "iscrowd": int(instance.iscrowd)}


def _resolve_image(file_name: str, roots: list[Path]) -> Path:
    for root in roots:
        try:
            if (root / file_name).is_file():
                return root / file_name
        except (OSError, ValueError):  # a name too long for the file system, ...
            break
    return roots[0] / file_name


def _id(value: object) -> int | str | None:
    """An image or category id (an integer or a string), or None when it is neither."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value


def _decode_rle(seg: dict, ann: dict, width: int, height: int, item: str, issues: Issues,
                ) -> Instance | None:
    size = seg.get("size")
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        issues.skip(item, f"RLE size {size!r} is not [height, width]")
        return None
    if size != [height, width]:
        issues.skip(item, f"RLE size {size} differs from the image size [{height}, {width}]")
        return None
    counts = seg.get("counts")
    try:
        if isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**31 - 1
                       for v in counts):
                raise ValueError("counts are not non-negative integers")
            rle = mask_util.frPyObjects({"size": size, "counts": counts}, height, width)
        elif isinstance(counts, str):
            rle = {"size": size, "counts": counts.encode("ascii")}
        else:
            raise ValueError(f"counts is {type(counts).__name__}, not a list or string")
        mask = mask_util.decode(rle).astype(bool)
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        issues.skip(item, f"undecodable RLE: {exc}")
        return None
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1):  # also True/False
        issues.warn(item, f"iscrowd {iscrowd!r} is not 0 or 1; taken as 0")
        iscrowd = 0
    return Instance(mask=mask, iscrowd=int(iscrowd))


def _decode_segmentation(ann: dict, width: int, height: int, item: str, issues: Issues,
                         ) -> Instance | None:
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        polygons = []
        for index, poly in enumerate(seg):
            poly_item = f"{item} polygon {index}"
            if len(poly) % 2:
                issues.skip(poly_item, f"polygon has an odd number ({len(poly)}) of coordinates")
                continue
            cleaned = clean_polygon(poly[0::2], poly[1::2], width, height, poly_item, issues)
            polygons += cleaned or []
        return Instance(polygons=polygons) if polygons else None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        return _decode_rle(seg, ann, width, height, item, issues)
    issues.skip(item, "no usable segmentation (need polygons or RLE)")
    return None


def _check_bbox(given: object, instance: Instance, width: int, height: int, item: str,
                issues: Issues) -> None:
    """Warn when a given bbox is malformed or off the mask's (it is recomputed anyway)."""
    actual = mask_util.toBbox(instance_rle(instance, height, width))
    try:
        values = to_numbers(given, "bbox")
        off = len(values) != 4 or not np.isfinite(values).all() or \
            np.abs(values - actual).max() > BBOX_TOLERANCE
    except ValueError:
        off = True
    if off:
        issues.warn(item, f"bbox {given!r} differs from the mask's "
                          f"{[round(float(v), 1) for v in actual]}; recomputed")


def _patient_id(entry: dict, meta: dict, item: str, issues: Issues) -> str:
    patient = entry.get("patient_id", meta["patient_id"])
    if isinstance(patient, bool) or not isinstance(patient, (str, int)) or patient == "":
        issues.warn(item, f"patient_id {patient!r} is not a name or number; using "
                          f"{meta['patient_id']!r} from the file name")
        return str(meta["patient_id"])
    return str(patient)


def _load(json_path: Path) -> dict:
    try:
        data = json.loads(Path(json_path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {json_path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{json_path} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise DatasetError(f"{json_path} is nested too deeply to be a COCO file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path} is not a COCO instances file (no 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DatasetError(f"{json_path}: '{key}' is {type(data[key]).__name__}, "
                               "not a list")
    return data


def _categories(data: dict, json_path: Path, issues: Issues) -> dict:
    categories: dict = {}
    for index, category in enumerate(data.get("categories", [])):
        cid = _id(category.get("id")) if isinstance(category, dict) else None
        item = f"{json_path.name} category {index}"
        if cid is None:
            issues.skip(item, "category without an integer or string id")
        elif cid in categories:
            issues.skip(item, f"duplicate category id {cid!r}")
        else:
            categories[cid] = category.get("name", "")
    return categories


def read_coco(json_path: Path, image_root: Path | None, issues: Issues) -> Iterator[Sample]:
    """Validate and normalise a COCO instances file, one :class:`Sample` per usable image.

    Images are looked up under ``image_root``, else beside the JSON, else in ``images/`` beside
    it or its parent. Missing sizes are read from the file; annotations with an unknown image or
    category id, bad polygons or RLE, or a bbox off the mask are skipped or warned about.
    """
    json_path = Path(json_path)
    data = _load(json_path)
    base = json_path.parent
    roots = ([Path(image_root)] if image_root else []) + [base, base / "images",
                                                          base.parent / "images"]
    categories = _categories(data, json_path, issues)
    by_image: dict = {}
    for index, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            issues.skip(f"{json_path.name} annotation #{index}", "not an object")
            continue
        image_id = _id(ann.get("image_id"))
        if image_id is None:
            issues.skip(f"{json_path.name} annotation {ann.get('id')!r}",
                        f"image_id {ann.get('image_id')!r} is not an integer or string")
            continue
        by_image.setdefault(image_id, []).append(ann)
    image_ids = {_id(img.get("id")) for img in data["images"] if isinstance(img, dict)}
    for image_id, anns in by_image.items():
        if image_id not in image_ids:
            for ann in anns:
                issues.skip(f"{json_path.name} annotation {ann.get('id')!r}",
                            f"image_id {image_id!r} is not in 'images'")
    seen_names: set[str] = set()
    seen_ids: set = set()
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict):
            issues.skip(f"{json_path.name} image #{index}", "not an object")
            continue
        name = entry.get("file_name")
        image_id = _id(entry.get("id"))
        item = f"{json_path.name} image {entry.get('id')!r} ({name})"
        if not isinstance(name, str) or not name:
            issues.skip(item, "image entry without a file_name")
            continue
        if image_id is None:
            issues.skip(item, "image entry without an integer or string id")
            continue
        if name in seen_names or image_id in seen_ids:
            issues.skip(item, "duplicate file name or image id")
            continue
        seen_names.add(name)
        seen_ids.add(image_id)
        path = _resolve_image(name, roots)
        image = read_checked(path, item, issues)
        if image is None:
            continue
        width, height = image.size
        if "width" not in entry or "height" not in entry:
            issues.warn(item, f"missing image size, read from the file: {width}x{height}")
        elif (entry["width"], entry["height"]) != (width, height):
            issues.warn(item, f"size {entry['width']!r}x{entry['height']!r} in the JSON differs "
                              f"from the file's {width}x{height}; using the file's")
        instances = []
        for ann in by_image.get(image_id, []):
            ann_item = f"{json_path.name} annotation {ann.get('id')!r} ({name})"
            category = _id(ann.get("category_id"))
            if category is None or category not in categories:
                issues.skip(ann_item, f"category mismatch: category_id "
                                      f"{ann.get('category_id')!r} is not in categories "
                                      f"{sorted(categories, key=str)}")
                continue
            instance = _decode_segmentation(ann, width, height, ann_item, issues)
            if instance is None:
                continue
            instance.tumor_type = tumor_type_from_label(categories[category])
            instance.source = ann_item
            if ann.get("bbox") is not None:
                _check_bbox(ann["bbox"], instance, width, height, ann_item, issues)
            instances.append(instance)
        plain = is_plain_8bit(image)
        out_name = name if plain else str(Path(name).with_suffix(".png"))
        meta = parse_name(Path(name).stem)
        yield Sample(
            source=item, file_name=out_name,
            patient_id=_patient_id(entry, meta, item, issues),
            width=width, height=height,
            instances=instances, image_path=path, copy_as_is=plain,
            pixels=lambda image=image: image_array(image),
            tumor_type=meta.get("tumor_type"),
            extra={k: entry[k] for k in ("pixel_spacing", "slice_index") if k in entry},
        )
