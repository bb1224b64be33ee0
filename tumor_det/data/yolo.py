"""YOLO text labels (boxes) -> :class:`Sample` objects with box-only instances.

Layouts, found under the input folder (recursively), per image:

- Ultralytics: ``images/<sub>/x.jpg`` + ``labels/<sub>/x.txt`` (the image path's last
  ``images`` folder becomes ``labels``; ``<sub>`` e.g. ``train``, or none; Roboflow's
  ``train/images`` + ``train/labels`` too);
- a label file beside its image: ``x.jpg`` + ``x.txt`` (the Figshare boxes, Br35H).

One line per tumor, ``class cx cy w h``: box centre and size normalised to 0-1 by the image's
width and height. Ultralytics segment lines (``class x1 y1 x2 y2 ...``, 3+ points, normalised)
are read as outlines through the polygon rule. Class names (``{id: name}``) come from
``--class-names``, else the ``names:`` (a list, or a dict ``{id: name}``) of ``data.yaml`` /
``dataset.yaml`` in the input folder (or the ``.yaml`` given as input), else ``classes.txt``
(one name per line); ``--classes type`` needs them, each naming a tumor type.

Rules: an existing but empty label file is a tumor-free image (kept as a negative); an image
without a label file is skipped (kept as tumor-free with ``--keep-negatives``); a label file
whose lines are all unusable skips its image. Per line (named ``<label file> line <n>``):
malformed lines, class ids that are not non-negative integers or not in the class names,
non-finite values, zero-size boxes and out-of-range boxes (centre outside the image, size
not in (0, 1]) are skipped; a box that spills over the border is clipped, with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

from tumor_det.data.records import (
    TUMOR_TYPES,
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
)

import numpy as np
import yaml

YAML_NAMES = ("data.yaml", "dataset.yaml")
CLASSES_TXT = "classes.txt"
#: A box may spill this far (normalised) over the image border without a warning.
SPILL_TOLERANCE = 1e-6


def parse_class_names(value: object, where: str) -> dict[int, str]:
    """``{id: name}`` from a ``names:`` list, a ``{id: name}`` dict or ``"a,b,c"``."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",")]
    if isinstance(value, list):
        value = dict(enumerate(value))
    if not isinstance(value, dict) or not value:
        raise DatasetError(f"{where}: class names must be a non-empty list or {{id: name}} "
                           f"mapping, got {value!r}")
    names = {}
    for key, name in value.items():
        try:
            class_id = int(key)
        except (TypeError, ValueError):
            class_id = -1
        if class_id < 0 or str(class_id) != str(key).strip():
            raise DatasetError(f"{where}: class id {key!r} is not a non-negative integer")
        if not isinstance(name, (str, int, float)) or not str(name).strip():
            raise DatasetError(f"{where}: class {class_id} has no name ({name!r})")
        names[class_id] = str(name).strip()
    return names


def find_class_names(path: Path) -> dict[int, str] | None:
    """The class names of the YOLO dataset in folder ``path`` (or of its ``.yaml`` file
    ``path``; see the module docstring), or None when it names none."""
    folder = path if path.is_dir() else path.parent
    yaml_file = path if path.is_file() else next(
        (folder / n for n in YAML_NAMES if (folder / n).is_file()), None)
    if yaml_file is not None:
        try:
            data = yaml.safe_load(yaml_file.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            raise DatasetError(f"cannot read {yaml_file}: {' '.join(str(exc).split())}") \
                from None
        if isinstance(data, dict) and data.get("names") is not None:
            return parse_class_names(data["names"], str(yaml_file))
    for names_file in (folder / CLASSES_TXT, folder / "labels" / CLASSES_TXT):
        if names_file.is_file():
            try:
                lines = names_file.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetError(f"cannot read {names_file}: {exc}") from None
            return parse_class_names([n for n in lines if n.strip()], str(names_file))
    return None


def class_types(names: Mapping[int, str] | None, classes: str) -> dict[int, str]:
    """``{id: tumor type}`` of the class names that name one; with ``classes == "type"`` every
    class must (``DatasetError`` otherwise)."""
    types = {k: tumor_type_from_label(v) for k, v in (names or {}).items()}
    if classes == "type":
        if not names:
            raise DatasetError("--classes type needs the YOLO class names: a data.yaml with "
                               "names: beside the labels, or --class-names, e.g. "
                               "--class-names pituitary,meningioma,glioma")
        unknown = [f"{k} {names[k]!r}" for k, t in types.items() if t is None]
        if unknown:
            raise DatasetError(f"--classes type: class {', '.join(unknown)} is not a tumor "
                               f"type ({', '.join(TUMOR_TYPES)}); rename it with "
                               "--class-names or use --classes tumor")
    return {k: t for k, t in types.items() if t is not None}


def _images_index(parts: tuple[str, ...]) -> int | None:
    """The index of the last ``images`` folder in a path's ``parts`` (not the file name)."""
    found = [k for k, part in enumerate(parts[:-1]) if part == "images"]
    return found[-1] if found else None


def label_candidates(image: Path, root: Path) -> list[Path]:
    """Where the label file of ``image`` may be: the Ultralytics ``labels/`` path (when the
    image is under an ``images`` folder), then beside the image."""
    parts = (root.name, *image.relative_to(root).parts)
    index = _images_index(parts)
    found = []
    if index is not None:
        found.append(root.parent.joinpath(*parts[:index], "labels", *parts[index + 1:])
                     .with_suffix(".txt"))
    return found + [image.with_suffix(".txt")]


def output_name(image: Path, root: Path, plain: bool) -> str:
    """``image``'s path under the dataset's ``images/`` (its last ``images`` folder left out;
    ``.png`` when converted)."""
    parts = (root.name, *image.relative_to(root).parts)
    index = _images_index(parts)
    rel = Path(*parts[1:]) if index is None or index == 0 else \
        Path(*parts[1:index], *parts[index + 1:])
    return rel.as_posix() if plain else rel.with_suffix(".png").as_posix()


def yolo_box(values: np.ndarray, width: int, height: int, item: str, issues: Issues,
             ) -> tuple[float, float, float, float] | None:
    """``(x, y, w, h)`` in pixels of a normalised ``cx cy w h`` box (clipped to the image), or
    None (skipped) when it has zero size or is out of range."""
    cx, cy, w, h = (float(v) for v in values)
    text = f"{cx:g} {cy:g} {w:g} {h:g}"
    if w == 0 or h == 0:
        issues.skip(item, f"zero-size box ({text})")
        return None
    if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1):
        issues.skip(item, f"box {text} out of range: YOLO values are normalised to 0-1 "
                          "(centre in the image, 0 < size <= 1)")
        return None
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    spill = max(-x0, -y0, x1 - 1, y1 - 1)
    if spill > SPILL_TOLERANCE:
        issues.warn(item, f"box {text} spills {spill:.3g} over the image border; clipped")
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
    return x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height


def parse_line(line: str, width: int, height: int, names: Mapping[int, str] | None,
               types: Mapping[int, str], item: str, issues: Issues) -> Instance | None:
    """The instance of one label line (see the module docstring), or None (skipped)."""
    values = line.split()
    if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
        issues.skip(item, f"malformed line ({len(values)} values): expected 'class cx cy w h' "
                          "or a segment 'class x1 y1 x2 y2 ...'")
        return None
    try:
        number = float(values[0])
    except ValueError:
        number = math.nan
    if not (number.is_integer() and number >= 0):
        issues.skip(item, f"class id {values[0]!r} is not a non-negative integer")
        return None
    class_id = int(number)
    if names is not None and class_id not in names:
        issues.skip(item, f"unknown class id {class_id} (classes: "
                          f"{', '.join(f'{k} {v}' for k, v in sorted(names.items()))})")
        return None
    try:
        coords = np.array([float(v) for v in values[1:]])
    except ValueError:
        issues.skip(item, f"malformed line: coordinates {' '.join(values[1:])!r} are not "
                          "numbers")
        return None
    if not np.isfinite(coords).all():
        issues.skip(item, "non-finite coordinates")
        return None
    if len(coords) == 4:
        bbox = yolo_box(coords, width, height, item, issues)
        return None if bbox is None else Instance(bbox=bbox, tumor_type=types.get(class_id),
                                                  source=item)
    polygons = clean_polygon((coords[0::2] * width).tolist(), (coords[1::2] * height).tolist(),
                             width, height, item, issues)
    return None if not polygons else Instance(polygons=polygons,
                                              tumor_type=types.get(class_id), source=item)


def _read_lines(path: Path, item: str, issues: Issues) -> list[str] | None:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        issues.skip(item, f"unreadable label file {path.name}: {' '.join(str(exc).split())}")
        return None


def read_yolo(input_path: Path, issues: Issues, class_names: Mapping[int, str] | None = None,
              classes: str = "tumor", keep_negatives: bool = False,
              patient_regex: str | None = None) -> Iterator[Sample]:
    """One :class:`Sample` per image under ``input_path`` (a folder, or its ``data.yaml``)
    with a usable label file (see the module docstring for the layouts and rules).

    The patient is the file stem's (``<label>---<patient>-i<slice>`` or ``patient_regex``),
    else the image itself (its path, so each image is its own group). Label files without an
    image are reported as skips.
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise DatasetError(f"input not found: {input_path}")
    if input_path.is_file() and input_path.suffix.lower() not in (".yaml", ".yml"):
        raise DatasetError(f"--format yolo expects a folder (or its data.yaml), got {input_path}")
    root = input_path if input_path.is_dir() else input_path.parent
    names = dict(class_names) if class_names else find_class_names(input_path)
    types = class_types(names, classes)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    used: set[Path] = set()
    for image_path in images:
        item = image_path.relative_to(root).as_posix()
        candidates = label_candidates(image_path, root)
        label = next((c for c in candidates if c.is_file()), None)
        lines: list[tuple[int, str]] = []
        if label is None:
            if not keep_negatives:
                wanted = " or ".join(_relative(c, root) for c in candidates)
                issues.skip(item, f"no label file ({wanted}); --keep-negatives keeps it as "
                                  "tumor-free")
                continue
        else:
            used.add(label)
            label_item = _relative(label, root)
            read = _read_lines(label, item, issues)
            if read is None:
                continue
            lines = [(n, line) for n, line in enumerate(read, 1) if line.strip()]
        image = read_checked(image_path, item, issues)
        if image is None:
            continue
        width, height = image.size
        instances = [parse_line(line, width, height, names, types,
                                f"{label_item} line {n}", issues) for n, line in lines]
        instances = [i for i in instances if i is not None]
        if lines and not instances:
            issues.skip(item, f"no usable box in {label.name} ({len(lines)} line(s) skipped)")
            continue
        plain = is_plain_8bit(image)
        file_name = output_name(image_path, root, plain)
        meta = parse_name(image_path.stem, patient_regex)
        patient = meta["patient_id"]
        if patient == image_path.stem:  # no patient in the name: the image is its own group
            patient = str(Path(file_name).with_suffix(""))
        found_types = {i.tumor_type for i in instances}
        yield Sample(
            source=item, file_name=file_name, patient_id=patient, width=width,
            height=height, instances=instances, image_path=image_path, copy_as_is=plain,
            pixels=lambda image=image: image_array(image),
            tumor_type=(found_types.pop() if len(found_types) == 1 and None not in found_types
                        else meta.get("tumor_type")),
            extra={"slice_index": meta["slice_index"]} if "slice_index" in meta else {},
            tumor_free=not lines,
        )
    image_dirs = {p.parent for p in images}
    for path in files:
        if path.suffix == ".txt" and path not in used and not _not_a_label(path.name) and (
                path.parent in image_dirs or "labels" in path.relative_to(root).parts[:-1]):
            issues.skip(path.relative_to(root).as_posix(), "label file without an image")


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, or to its parent (``labels/`` beside an ``images`` root)."""
    return (path.relative_to(root) if path.is_relative_to(root)
            else path.relative_to(root.parent)).as_posix()


def _not_a_label(name: str) -> bool:
    return name.lower() == CLASSES_TXT or name.lower().startswith(("readme", "license"))
