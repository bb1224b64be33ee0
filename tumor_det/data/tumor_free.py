"""Folders of unlabelled tumor-free images -> tumor-free :class:`Sample` objects (negatives).

``--format images`` reads the input folder this way, and ``--negatives DIR`` adds such a folder
to any dataset. Every image under the folder (recursively) is a negative: a COCO image without
annotations, split like the others. Images go through the usual rules (8-bit JPEG/PNG copied,
others converted; unreadable or truncated files skipped). An image with a non-empty YOLO label
file (``x.txt`` beside it or in ``labels/``) is not tumor-free: it is skipped, named.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from tumor_det.data.records import DatasetError, Issues, Sample, parse_name
from tumor_det.data.validation import IMAGE_SUFFIXES, image_array, is_plain_8bit, read_checked
from tumor_det.data.yolo import label_candidates, output_name


def _has_boxes(label: Path) -> bool:
    try:
        return label.is_file() and bool(label.read_text(encoding="utf-8-sig").strip())
    except (OSError, UnicodeDecodeError):
        return True  # a label file we cannot read may hold boxes


def read_tumor_free(root: Path, issues: Issues, patient_regex: str | None = None,
                    prefix: str = "") -> Iterator[Sample]:
    """One tumor-free :class:`Sample` per readable image under ``root`` (a folder or one image).

    ``file_name`` is the image's path under ``root``, after ``prefix`` (``--negatives`` uses
    the folder's name, so that its files cannot clash with the input's). The patient is the
    file stem's (``<label>---<patient>-i<slice>`` or ``patient_regex``), else the image itself
    (its own group, named ``<prefix>/<path>``).
    """
    root = Path(root)
    if root.is_file():
        files, base = [root], root.parent
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        base = root
    else:
        raise DatasetError(f"tumor-free images not found: {root}")
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    for path in files:
        item = str(PurePosixPath(prefix, path.relative_to(base).as_posix()))
        labelled = next((c for c in label_candidates(path, base) if _has_boxes(c)), None)
        if labelled is not None:
            issues.skip(item, f"has a label file with boxes ({labelled.name}): not tumor-free "
                              "(use --format yolo)")
            continue
        image = read_checked(path, item, issues)
        if image is None:
            continue
        plain = is_plain_8bit(image)
        file_name = str(PurePosixPath(prefix, output_name(path, base, plain)))
        meta = parse_name(path.stem, patient_regex)
        patient = meta["patient_id"]
        if patient == path.stem:  # no patient in the name: the image is its own group
            patient = str(PurePosixPath(file_name).with_suffix(""))
        width, height = image.size
        yield Sample(
            source=item, file_name=file_name, patient_id=patient, width=width, height=height,
            image_path=path, copy_as_is=plain, pixels=lambda image=image: image_array(image),
            tumor_type=meta.get("tumor_type"),
            extra={"slice_index": meta["slice_index"]} if "slice_index" in meta else {},
            tumor_free=True,
        )
