"""COCO instances: read and normalise an existing file, build annotations, write files atomically.

Masks and RLE go through pycocotools; every annotation's ``area`` and ``bbox`` are recomputed
from its rasterised mask, so they always agree with the segmentation.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from tumor_det.atomic import atomic_path
from tumor_det.data.records import (
    DatasetError,
    Instance,
    Issues,
    Sample,
    parse_name,
    tumor_type_from_label,
)
from tumor_det.data.validation import clean_polygon, image_array, is_plain_8bit, read_checked
from tumor_det.data.validation import mask_to_polygons as _mask_to_polygons
from tumor_det.intensity import to_uint8

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
        if (root / file_name).is_file():
            return root / file_name
    return roots[0] / file_name


def _decode_segmentation(ann: dict, width: int, height: int, item: str, issues: Issues,
                         ) -> Instance | None:
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        polygons = []
        for index, poly in enumerate(seg):
            cleaned = clean_polygon(poly[0::2], poly[1::2], width, height,
                                    f"{item} polygon {index}", issues)
            polygons += cleaned or []
        return Instance(polygons=polygons) if polygons else None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [height, width]:
            issues.skip(item, f"RLE size {list(seg['size'])} differs from the image size "
                              f"[{height}, {width}]")
            return None
        try:
            rle = (mask_util.frPyObjects(seg, height, width) if isinstance(seg["counts"], list)
                   else {"size": seg["size"], "counts": seg["counts"].encode("ascii")})
            mask = mask_util.decode(rle).astype(bool)
        except (TypeError, ValueError, AttributeError) as exc:
            issues.skip(item, f"undecodable RLE: {exc}")
            return None
        return Instance(mask=mask, iscrowd=int(ann.get("iscrowd", 0)))
    issues.skip(item, "no usable segmentation (need polygons or RLE)")
    return None


def read_coco(json_path: Path, image_root: Path | None, issues: Issues) -> Iterator[Sample]:
    """Validate and normalise a COCO instances file, one :class:`Sample` per usable image.

    Images are looked up under ``image_root``, else beside the JSON, else in ``images/`` beside
    it or its parent. Missing sizes are read from the file; annotations with an unknown image or
    category id, bad polygons or RLE, or a bbox off the mask are skipped or warned about.
    """
    try:
        data = json.loads(Path(json_path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {json_path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{json_path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path} is not a COCO instances file (no 'images' list)")
    base = Path(json_path).parent
    roots = ([Path(image_root)] if image_root else []) + [base, base / "images",
                                                          base.parent / "images"]
    categories = {c.get("id"): c.get("name", "") for c in data.get("categories", [])}
    by_image: dict = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    image_ids = {img.get("id") for img in data["images"]}
    for image_id, anns in by_image.items():
        if image_id not in image_ids:
            for ann in anns:
                issues.skip(f"{json_path.name} annotation {ann.get('id')}",
                            f"image_id {image_id} is not in 'images'")
    seen_names: set[str] = set()
    seen_ids: set = set()
    for entry in data["images"]:
        name = entry.get("file_name")
        item = f"{json_path.name} image {entry.get('id')} ({name})"
        if not name:
            issues.skip(item, "image entry without file_name")
            continue
        if name in seen_names or entry.get("id") in seen_ids:
            issues.skip(item, "duplicate file name or image id")
            continue
        seen_names.add(name)
        seen_ids.add(entry.get("id"))
        path = _resolve_image(name, roots)
        image = read_checked(path, item, issues)
        if image is None:
            continue
        width, height = image.size
        if "width" not in entry or "height" not in entry:
            issues.warn(item, f"missing image size, read from the file: {width}x{height}")
        elif (entry["width"], entry["height"]) != (width, height):
            issues.warn(item, f"size {entry['width']}x{entry['height']} in the JSON differs "
                              f"from the file's {width}x{height}; using the file's")
        instances = []
        for ann in by_image.get(entry.get("id"), []):
            ann_item = f"{json_path.name} annotation {ann.get('id')} ({name})"
            if ann.get("category_id") not in categories:
                issues.skip(ann_item, f"category mismatch: category_id {ann.get('category_id')}"
                                      f" is not in categories {sorted(categories)}")
                continue
            instance = _decode_segmentation(ann, width, height, ann_item, issues)
            if instance is None:
                continue
            instance.tumor_type = tumor_type_from_label(categories[ann["category_id"]])
            instance.source = ann_item
            given = ann.get("bbox")
            if given is not None:
                actual = mask_util.toBbox(instance_rle(instance, height, width))
                if len(given) != 4 or np.abs(np.asarray(given, float) - actual).max() > \
                        BBOX_TOLERANCE:
                    issues.warn(ann_item, f"bbox {given} differs from the mask's "
                                          f"{[round(float(v), 1) for v in actual]}; recomputed")
            instances.append(instance)
        plain = is_plain_8bit(image)
        out_name = name if plain else str(Path(name).with_suffix(".png"))
        meta = parse_name(Path(name).stem)
        yield Sample(
            source=item, file_name=out_name,
            patient_id=str(entry.get("patient_id", meta["patient_id"])),
            width=width, height=height,
            instances=instances, image_path=path, copy_as_is=plain,
            pixels=lambda image=image: image_array(image),
            tumor_type=meta.get("tumor_type"),
            extra={k: entry[k] for k in ("pixel_spacing", "slice_index") if k in entry},
        )
