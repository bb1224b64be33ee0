"""Image + binary mask pairs -> :class:`Sample` objects (one instance per mask component).

Pairs are found under the input folder (recursively) as ``x.tif`` + ``x_mask.tif`` (any of the
image suffixes on either side), or ``x.png`` + ``masks/x.png`` (``masks/`` beside the image or
beside its ``images/`` folder). Images may be 8/16-bit, grey or colour; a mask pixel is
foreground when it is non-zero in any channel; components are 8-connected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tumor_det.data.records import DatasetError, Instance, Issues, Sample, parse_name
from tumor_det.data.validation import (
    IMAGE_SUFFIXES,
    components,
    image_array,
    is_plain_8bit,
    read_checked,
)

MASK_SUFFIX = "_mask"


def _is_mask(path: Path) -> bool:
    return path.stem.endswith(MASK_SUFFIX) or path.parent.name == "masks"


def _mask_candidates(image: Path) -> list[Path]:
    folders = [image.parent / "masks"]
    if image.parent.name == "images":
        folders.append(image.parent.parent / "masks")
    found = [p for p in image.parent.glob(f"{image.stem}{MASK_SUFFIX}.*")]
    for folder in folders:
        found += list(folder.glob(f"{image.stem}.*"))
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)


def find_pairs(root: Path, issues: Issues) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs under ``root``; unpaired images and masks are recorded as skips."""
    if not root.is_dir():
        raise DatasetError(f"input folder not found: {root}")
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    pairs, used = [], set()
    for image in (p for p in files if not _is_mask(p)):
        masks = _mask_candidates(image)
        if not masks:
            issues.skip(str(image.relative_to(root)),
                        f"no mask found ({image.stem}{MASK_SUFFIX}.* or masks/{image.stem}.*)")
            continue
        if len(masks) > 1:
            issues.warn(str(image.relative_to(root)),
                        f"several masks {[m.name for m in masks]}; using {masks[0].name}")
        pairs.append((image, masks[0]))
        used.add(masks[0])
    for mask in (p for p in files if _is_mask(p) and p not in used):
        issues.skip(str(mask.relative_to(root)), "mask without a matching image")
    return pairs


def _output_name(image: Path, root: Path, plain: bool) -> str:
    rel = image.relative_to(root)
    if rel.parts[0] == "images" and len(rel.parts) > 1:
        rel = Path(*rel.parts[1:])
    return rel.as_posix() if plain else rel.with_suffix(".png").as_posix()


def read_mask_pairs(root: Path, issues: Issues, patient_regex: str | None = None,
                    ) -> Iterator[Sample]:
    """One :class:`Sample` per readable pair (masks of another size are skipped)."""
    root = Path(root)
    for image_path, mask_path in find_pairs(root, issues):
        item = str(image_path.relative_to(root))
        image = read_checked(image_path, item, issues)
        mask_image = read_checked(mask_path, f"{item} (mask {mask_path.name})", issues)
        if image is None or mask_image is None:
            continue
        if mask_image.size != image.size:
            issues.skip(item, f"mask {mask_path.name} is {mask_image.size[0]}x"
                              f"{mask_image.size[1]}, image is {image.size[0]}x{image.size[1]}")
            continue
        mask = image_array(mask_image)
        mask = mask.any(axis=2) if mask.ndim == 3 else mask > 0
        meta = parse_name(image_path.stem, patient_regex)
        plain = is_plain_8bit(image)
        width, height = image.size
        yield Sample(
            source=item, file_name=_output_name(image_path, root, plain),
            patient_id=meta["patient_id"], width=width, height=height,
            instances=[Instance(mask=c) for c in components(mask)],
            image_path=image_path, copy_as_is=plain,
            pixels=lambda image=image: image_array(image), tumor_type=meta.get("tumor_type"),
            extra={"slice_index": meta["slice_index"]} if "slice_index" in meta else {},
            empty_reason=f"empty mask {mask_path.name}",
        )
