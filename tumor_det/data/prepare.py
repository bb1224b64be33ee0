"""Turn annotated MRI in any supported format into a registered COCO dataset, with a summary.

Output (what :func:`tumor_det.data.register_all` registers as ``<name>_<split>``)::

    <output>/images/...                  8-bit PNG (or the 8-bit JPEG/PNG sources, copied)
    <output>/annotations/<split>.json    train/val/test, fold0..foldK-1, or all
    <output>/prepare_summary.txt         the printed summary with every skipped item

Readers (``via``, ``coco_io``, ``mask_pairs``, ``figshare``, ``nifti``, ``yolo``,
``tumor_free``, ``synthetic``) yield :class:`~tumor_det.data.records.Sample` objects;
:func:`write_dataset` is the one writer (annotations: outlines through the polygon rule,
box-only instances as COCO boxes without ``segmentation``; patient-level splits);
:func:`prepare` reads ``options.input`` (and the ``negatives`` folders) and calls it. From
Python, with samples at hand::

    write_dataset(samples, PrepareOptions("mine", None, out, split="0.7,0.15,0.15"), Issues())
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from tumor_det.data.coco_io import build_annotation, read_coco, write_image
from tumor_det.data.duplicates import group_near_duplicates
from tumor_det.data.figshare import read_cvind, read_figshare
from tumor_det.data.mask_pairs import read_mask_pairs
from tumor_det.data.nifti import read_nifti
from tumor_det.data.records import TUMOR_TYPES, DatasetError, Instance, Issues, Sample
from tumor_det.data.splits import (
    assign_patients,
    fold_fractions,
    leaking_patients,
    parse_fractions,
    patient_block,
    patient_folds,
)
from tumor_det.data.tumor_free import read_tumor_free
from tumor_det.data.validation import to_number
from tumor_det.data.via import read_via
from tumor_det.data.yolo import parse_class_names, read_yolo
from tumor_det.utils.atomic import write_json, write_text

from tabulate import tabulate

FORMATS = ("via", "coco", "masks", "figshare", "nifti", "yolo", "images")
_SPLIT_FILE = re.compile(r"^(train|val|test|all|fold\d+)\.json$")
MAX_SKIPS_SHOWN = 40
NO_TUMOR = "none"  # the split stratum of tumor-free images
#: Box corners may lie this many pixels outside the image before a clipping warning.
BOX_TOLERANCE = 1e-3


@dataclass
class PrepareOptions:
    """What ``tools/prepare_dataset.py`` asks for (see its ``--help``).

    :func:`write_dataset` uses ``output``, ``classes``, ``split``/``folds``, ``seed``,
    ``mask_format`` and ``keep_negatives``; ``format``/``input`` only name the source there.
    :func:`read_samples` also reads the ``negatives`` folders (tumor-free images) and groups
    numbered files into ``patient_blocks``, near-duplicate images into one group with
    ``group_duplicates``.
    """

    format: str
    input: Path | None
    output: Path
    classes: str = "tumor"
    split: str | None = None
    folds: int | None = None
    seed: int = 0
    mask_format: str = "polygon"
    keep_negatives: bool = False
    negative_ratio: float | None = None
    image_root: Path | None = None
    patient_regex: str | None = None
    axis: str = "axial"
    modality: str | None = None
    channel: int = 0
    label_values: list[int] | None = None
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    class_names: str | None = None
    negatives: list[Path] = field(default_factory=list)
    patient_blocks: int | None = None
    group_duplicates: bool = False


@dataclass
class PrepareResult:
    """The COCO dicts written per split, and the issues met."""

    output: Path
    splits: dict[str, dict]
    issues: Issues
    class_names: list[str]

    def summary(self, max_skips: int | None = MAX_SKIPS_SHOWN) -> str:
        """Tables: images/patients/instances per split and class; skipped items with reasons."""
        rows = []
        for name, coco in self.splits.items():
            per_class = Counter(a["category_id"] for a in coco["annotations"])
            annotated = {a["image_id"] for a in coco["annotations"]}
            rows.append([name, len(coco["images"]),
                         sum(i["id"] not in annotated for i in coco["images"]),
                         len({i["patient_id"] for i in coco["images"]}),
                         len(coco["annotations"])]
                        + [per_class[k + 1] for k in range(len(self.class_names))])
        if len(rows) > 1:
            rows.append(["total"] + [sum(r[i] for r in rows) for i in range(1, len(rows[0]))])
        lines = [f"dataset {self.output.name} in {self.output}",
                 tabulate(rows, headers=["split", "images", "tumor-free", "patients",
                                         "instances", *self.class_names])]
        issues = self.issues
        if issues.dropped_negatives:
            lines.append(f"tumor-free slices dropped: {issues.dropped_negatives} "
                         "(--keep-negatives keeps them)")
        lines.append(f"warnings: {len(issues.warnings)}; skipped: {len(issues.skipped)}")
        if issues.skipped:
            shown = issues.skipped if max_skips is None else issues.skipped[:max_skips]
            lines.append(tabulate(shown, headers=["skipped item", "reason"]))
            if len(shown) < len(issues.skipped):
                lines.append(f"... and {len(issues.skipped) - len(shown)} more "
                             f"(all in {self.output / 'prepare_summary.txt'})")
        return "\n".join(lines)


def read_samples(options: PrepareOptions, issues: Issues) -> Iterator[Sample]:
    """The samples of ``options.input`` in ``options.format`` (numbered files grouped into
    ``options.patient_blocks``), then the tumor-free images of the ``options.negatives``
    folders, each under its folder's name."""
    samples = _read_input(options, issues)
    if options.patient_blocks:
        samples = in_patient_blocks(samples, options.patient_blocks, issues)
    prefixes: set[str] = set()
    negatives = []
    for folder in options.negatives:
        prefix = Path(folder).resolve().name or "negatives"
        prefix = next(f"{prefix}-{k}" if k else prefix for k in itertools.count()
                      if (f"{prefix}-{k}" if k else prefix) not in prefixes)
        prefixes.add(prefix)
        negatives.append(read_tumor_free(Path(folder), issues, options.patient_regex, prefix))
    samples = itertools.chain(samples, *negatives)
    if options.group_duplicates:
        return iter(group_near_duplicates(samples, issues))
    return samples


def in_patient_blocks(samples: Iterable[Sample], size: int, issues: Issues,
                      ) -> Iterator[Sample]:
    """``samples`` whose file stem is a number ``n`` put in patient group
    :func:`~tumor_det.data.splits.patient_block` ``(folder, n, size)`` (``--patient-blocks``).

    For releases without patient ids whose files are numbered patient after patient
    (Figshare). A patient whose numbers straddle a block boundary lands in two blocks (see
    :func:`~tumor_det.data.splits.patient_block`). Samples with a known patient id, or
    without a number as file stem, keep their group (counted in one warning).
    """
    kept = []
    for sample in samples:
        name = PurePosixPath(sample.file_name)
        own_group = sample.patient_id in (name.stem, str(name.with_suffix("")))
        if own_group and re.fullmatch(r"[0-9]+", name.stem):
            sample.patient_id = patient_block(str(name.parent), int(name.stem), size)
        else:
            kept.append(sample.source)
        yield sample
    if kept:
        issues.warn("--patient-blocks", f"{len(kept)} image(s) keep their own patient group "
                                        f"(a patient id, or no number as file name; first: "
                                        f"{kept[0]})")


def _read_input(options: PrepareOptions, issues: Issues) -> Iterator[Sample]:
    """The samples of ``options.input`` in ``options.format``."""
    path = options.input
    if options.format not in FORMATS:
        raise DatasetError(f"unknown format {options.format!r}; choose from {FORMATS}")
    if path is None and not (options.format == "nifti" and options.pairs):
        raise DatasetError("--input is required")
    for required in ([path] if path is not None else []) + [p for pair in options.pairs
                                                            for p in pair]:
        if not Path(required).exists():
            raise DatasetError(f"input not found: {required}")
    if options.format == "via":
        return read_via(path, options.image_root, issues, options.patient_regex)
    if options.format == "coco":
        if not path.is_file():
            raise DatasetError(f"--format coco expects a JSON file, got {path}")
        return read_coco(path, options.image_root, issues)
    if options.format == "masks":
        return read_mask_pairs(path, issues, options.patient_regex)
    if options.format == "figshare":
        return read_figshare(path, issues)
    if options.format == "yolo":
        names = (parse_class_names(options.class_names, "--class-names")
                 if options.class_names else None)
        return read_yolo(path, issues, names, options.classes, options.keep_negatives,
                         options.patient_regex)
    if options.format == "images":
        return read_tumor_free(path, issues, options.patient_regex)
    return read_nifti(path, issues, pairs=options.pairs, modality=options.modality,
                      axis=options.axis, channel=options.channel,
                      label_values=options.label_values, keep_negatives=options.keep_negatives,
                      negative_ratio=options.negative_ratio, seed=options.seed)


def _category(sample: Sample, instance_type: str | None, options: PrepareOptions) -> int:
    if options.classes == "tumor":
        return 1
    tumor_type = instance_type or sample.tumor_type
    if tumor_type is None:
        raise DatasetError(f"--classes type: the tumor type of {sample.source} is unknown "
                           "(not in its file name, label or attributes); use --classes tumor")
    return TUMOR_TYPES.index(tumor_type) + 1


def _cvind_folds(images: list[dict], options: PrepareOptions, issues: Issues,
                 ) -> dict[int, str] | None:
    """The published Figshare folds (``cvind.mat``), when they fit and keep patients apart."""
    cvind = read_cvind(options.input)
    indices = [image.get("figshare_index") for image in images]
    if (cvind is None or len(set(cvind)) != options.folds
            or not all(i is not None and 1 <= i <= len(cvind) for i in indices)):
        return None
    folds = {image["id"]: f"fold{cvind[image['figshare_index'] - 1] - 1}" for image in images}
    leaks = leaking_patients([(image["patient_id"], folds[image["id"]]) for image in images])
    if not leaks:
        return folds
    issues.warn("cvind.mat", f"its folds split {len(leaks)} patient(s); "
                             "making patient-level folds instead")
    return None


def _split_of_images(images: list[dict], strata: dict[int, str], options: PrepareOptions,
                     issues: Issues) -> dict[int, str]:
    """``{image id: split}``: patient-level, each image's stratum spread over the splits."""
    if not options.split and not options.folds:
        return {image["id"]: "all" for image in images}
    if options.folds and options.format == "figshare":
        folds = _cvind_folds(images, options, issues)
        if folds is not None:
            return folds
    patients = [image["patient_id"] for image in images]
    if options.folds:
        of_patient = patient_folds(patients, [strata[image["id"]] for image in images],
                                   options.folds, options.seed)
    else:
        per_patient: dict[str, Counter] = {}
        for image in images:
            per_patient.setdefault(image["patient_id"], Counter())[strata[image["id"]]] += 1
        of_patient = assign_patients(
            {p: sum(c.values()) for p, c in per_patient.items()},
            parse_fractions(options.split), options.seed,
            strata={p: _patient_stratum(c) for p, c in per_patient.items()})
    return {image["id"]: of_patient[image["patient_id"]] for image in images}


def _patient_stratum(image_strata: Counter) -> str:
    """A patient's most common tumor stratum; ``none`` only when all its images are tumor-free."""
    tumors = Counter({k: n for k, n in image_strata.items() if k != NO_TUMOR})
    return tumors.most_common(1)[0][0] if tumors else NO_TUMOR


def check_options(options: PrepareOptions) -> None:
    """Raise ``DatasetError`` for contradictory or malformed options, before any work."""
    if options.negative_ratio is not None and options.negative_ratio < 0:
        raise DatasetError("--negative-ratio must be >= 0")
    if options.patient_blocks is not None and options.patient_blocks < 1:
        raise DatasetError(f"--patient-blocks must be at least 1, got {options.patient_blocks}")
    if options.class_names is not None:
        if options.format != "yolo":
            raise DatasetError("--class-names is for --format yolo")
        parse_class_names(options.class_names, "--class-names")
    for folder in options.negatives:
        if not Path(folder).exists():
            raise DatasetError(f"--negatives folder not found: {folder}")
    if options.split and options.folds:
        raise DatasetError("give --split or --folds, not both")
    if options.folds is not None:
        fold_fractions(options.folds)
    elif options.split:
        parse_fractions(options.split)


def prepare(options: PrepareOptions) -> PrepareResult:
    """Read ``options.input``, :func:`write_dataset` it and write ``prepare_summary.txt``."""
    check_options(options)
    issues = Issues()
    samples = read_samples(options, issues)
    negatives = "".join(f" --negatives {folder}" for folder in options.negatives)
    info = {"description": f"tumor-det prepare_dataset --format {options.format} "
                           f"--input {options.input}{negatives}",
            "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    result = write_dataset(samples, options, issues, info)
    write_text(result.output / "prepare_summary.txt", result.summary(max_skips=None) + "\n")
    return result


def write_dataset(samples: Iterable[Sample], options: PrepareOptions,
                  issues: Issues | None = None, info: dict | None = None) -> PrepareResult:
    """Validate ``samples`` (from any reader), write their images and one COCO file per split.

    The one writer behind ``prepare`` and the synthetic dataset. Uses ``options``' output,
    classes, split/folds, seed, mask format and keep_negatives; ``info`` is the COCO ``info``.
    Split files are written last to first, so ``train.json`` (or ``fold0.json``/``all.json``)
    appears last. Raises ``DatasetError`` when nothing is usable.
    """
    check_options(options)
    issues = issues if issues is not None else Issues()
    class_names = list(TUMOR_TYPES) if options.classes == "type" else ["tumor"]
    out = Path(options.output)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # Images go to a staging folder first and are moved into images/ only once the splits are
    # made: a run that fails half-way (no usable sample, too few patients for the splits, an
    # unknown tumor type) leaves an existing dataset in ``out`` as it was.
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    try:
        images, annotations, strata = _write_images(samples, options, issues, class_names,
                                                    staging)
        if not images:
            where = options.input or ("the --pair volumes" if options.pairs
                                      else f"the {options.format} samples")
            first = (f" (first: {issues.skipped[0][0]}: {issues.skipped[0][1]})"
                     if issues.skipped else "")
            raise DatasetError(f"nothing usable in {where}: "
                               f"{len(issues.skipped)} item(s) skipped{first}")
        split_of = _split_of_images(images, strata, options, issues)
        categories = [{"id": k + 1, "name": name, "supercategory": "tumor"}
                      for k, name in enumerate(class_names)]
        splits = {}
        for name in sorted(set(split_of.values()), key=_split_order):
            ids = {i for i, s in split_of.items() if s == name}
            splits[name] = {"info": info or {}, "licenses": [], "categories": categories,
                            "images": [i for i in images if i["id"] in ids],
                            "annotations": [a for a in annotations if a["image_id"] in ids]}
        _move_images(staging, out / "images")
        _write_splits(out / "annotations", splits)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    return PrepareResult(out, splits, issues, class_names)


def _move_images(staging: Path, images: Path) -> None:
    """Move the staged images into ``images/`` (same file system: each move is atomic)."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        dest = images / path.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)


def _safe_file_name(name: str) -> str | None:
    """``name`` as a relative POSIX path under ``images/`` (``./a.png`` -> ``a.png``), or None
    when it is empty, absolute, climbs out with ``..`` or holds a NUL character."""
    path = PurePosixPath(name)
    if not name or "\x00" in name or path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path.as_posix()


def _checked_extra(sample: Sample, issues: Issues) -> dict:
    """``sample.extra`` with a malformed ``pixel_spacing`` or ``slice_index`` left out (warned):
    spacing is two positive, finite numbers (row mm, column mm), a slice index an integer."""
    extra = dict(sample.extra)
    if "pixel_spacing" in extra:
        spacing = extra["pixel_spacing"]
        try:
            values = [to_number(v) for v in spacing if not isinstance(v, str)] \
                if isinstance(spacing, (list, tuple)) and len(spacing) == 2 else []
        except ValueError:
            values = []
        if len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values):
            extra["pixel_spacing"] = values
        else:
            issues.warn(sample.source, f"pixel_spacing {spacing!r} is not two positive numbers; "
                                       "left out")
            del extra["pixel_spacing"]
    if "slice_index" in extra:
        index = extra["slice_index"]
        if isinstance(index, bool) or not isinstance(index, int):
            issues.warn(sample.source, f"slice_index {index!r} is not an integer; left out")
            del extra["slice_index"]
    return extra


def _write_images(samples: Iterable[Sample], options: PrepareOptions, issues: Issues,
                  class_names: list[str], folder: Path,
                  ) -> tuple[list[dict], list[dict], dict[int, str]]:
    """Annotate each sample and write its image under ``folder``: COCO images, annotations,
    ``{id: stratum}``.

    An image's stratum (what the splits spread evenly) is its class (the tumor type with
    ``--classes type``), or ``NO_TUMOR`` for a tumor-free image.
    """
    images, annotations, strata, written = [], [], {}, {}
    for sample in samples:
        file_name = _safe_file_name(sample.file_name)
        if file_name is None:
            issues.skip(sample.source, f"file name {sample.file_name!r} would be written "
                                       "outside the dataset's images/ folder")
            continue
        if file_name in written:
            issues.skip(sample.source, f"duplicate file name {file_name} "
                                       f"(already taken by {written[file_name]})")
            continue
        anns = []
        for index, instance in enumerate(sample.instances):
            item = instance.source or f"{sample.source} instance {index}"
            if instance.polygons is None and instance.mask is None:
                ann = box_annotation(instance, sample.width, sample.height, item, issues)
            else:
                ann = build_annotation(instance, sample.height, sample.width,
                                       options.mask_format, item, issues)
            if ann is not None:
                ann["category_id"] = _category(sample, instance.tumor_type, options)
                anns.append(ann)
        if not anns and not (options.keep_negatives or sample.tumor_free):
            issues.skip(sample.source, sample.empty_reason)
            continue
        try:
            write_image(sample, folder / file_name)
        except (OSError, ValueError, TypeError) as exc:
            issues.skip(sample.source, f"cannot write the image: {exc}")
            continue
        written[file_name] = sample.source
        image_id = len(images) + 1
        entry = {"id": image_id, "file_name": file_name, "width": sample.width,
                 "height": sample.height, "patient_id": str(sample.patient_id),
                 **_checked_extra(sample, issues)}
        if sample.tumor_type:
            entry["tumor_type"] = sample.tumor_type
        images.append(entry)
        # one class: the tumor type when known, so that every fold gets its share of each
        strata[image_id] = ((sample.tumor_type if len(class_names) == 1 and sample.tumor_type
                             else class_names[anns[0]["category_id"] - 1]) if anns
                            else NO_TUMOR)
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    return images, annotations, strata


def box_annotation(instance: Instance, width: int, height: int, item: str, issues: Issues,
                   ) -> dict | None:
    """The COCO annotation (without ids) of a box-only instance: ``bbox`` ``[x, y, w, h]``
    (pixels, clipped to the image with a warning), ``area`` ``w * h``, ``iscrowd``, and no
    ``segmentation``; ``None`` (skipped) when the box is malformed or has no area."""
    try:
        x, y, w, h = (to_number(v) for v in instance.bbox)
    except (TypeError, ValueError):
        issues.skip(item, f"bbox {instance.bbox!r} is not four numbers [x, y, w, h]")
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        issues.skip(item, f"bbox {[x, y, w, h]} has non-finite values")
        return None
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
    if max(x0 - x, y0 - y, x + w - x1, y + h - y1) > BOX_TOLERANCE and x1 > x0 and y1 > y0:
        issues.warn(item, f"bbox {[x, y, w, h]} clipped to the {width}x{height} image")
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        issues.skip(item, f"zero-size box: bbox {[x, y, w, h]} covers no part of the "
                          f"{width}x{height} image")
        return None
    box = [round(v, 3) for v in (x0, y0, x1 - x0, y1 - y0)]
    return {"area": round(box[2] * box[3], 3), "bbox": box, "iscrowd": int(instance.iscrowd)}


def _write_splits(ann_dir: Path, splits: dict[str, dict]) -> None:
    """One JSON per split, last split first; stale split files of an earlier run removed."""
    for name in reversed(list(splits)):
        write_json(ann_dir / f"{name}.json", splits[name])
    for stale in ann_dir.glob("*.json"):
        if _SPLIT_FILE.match(stale.name) and stale.stem not in splits:
            os.remove(stale)  # from an earlier run with other splits: it would be registered


def _split_order(name: str) -> tuple:
    order = {"train": 0, "val": 1, "test": 2, "all": 3}
    digits = re.sub(r"\D", "", name)
    return (order.get(name, 4), int(digits) if digits else 0)
