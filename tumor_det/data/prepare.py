"""Turn annotated MRI in any supported format into a registered COCO dataset, with a summary.

Output (what :func:`tumor_det.data.register_all` registers as ``<name>_<split>``)::

    <output>/images/...                  8-bit PNG (or the 8-bit JPEG/PNG sources, copied)
    <output>/annotations/<split>.json    train/val/test, fold0..foldK-1, or all
    <output>/prepare_summary.txt         the printed summary with every skipped item
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tumor_det.atomic import write_json, write_text
from tumor_det.data.coco_io import build_annotation, read_coco, write_image
from tumor_det.data.figshare import read_cvind, read_figshare
from tumor_det.data.mask_pairs import read_mask_pairs
from tumor_det.data.nifti import read_nifti
from tumor_det.data.records import TUMOR_TYPES, DatasetError, Issues, Sample
from tumor_det.data.splits import assign_patients, fold_fractions, leaking_patients, parse_fractions
from tumor_det.data.via import read_via

from tabulate import tabulate

FORMATS = ("via", "coco", "masks", "figshare", "nifti")
_SPLIT_FILE = re.compile(r"^(train|val|test|all|fold\d+)\.json$")
MAX_SKIPS_SHOWN = 40


@dataclass
class PrepareOptions:
    """What ``tools/prepare_dataset.py`` asks for (see its ``--help``)."""

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
            rows.append([name, len(coco["images"]),
                         len({i["patient_id"] for i in coco["images"]}),
                         len(coco["annotations"])]
                        + [per_class[k + 1] for k in range(len(self.class_names))])
        if len(rows) > 1:
            rows.append(["total"] + [sum(r[i] for r in rows) for i in range(1, len(rows[0]))])
        lines = [f"dataset {self.output.name} in {self.output}",
                 tabulate(rows, headers=["split", "images", "patients", "instances",
                                         *self.class_names])]
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


def _split_of_images(images: list[dict], options: PrepareOptions, issues: Issues,
                     ) -> dict[int, str]:
    if options.split and options.folds:
        raise DatasetError("give --split or --folds, not both")
    if not options.split and not options.folds:
        return {image["id"]: "all" for image in images}
    if options.folds and options.format == "figshare":
        cvind = read_cvind(options.input)
        indices = [image.get("figshare_index") for image in images]
        if (cvind is not None and len(set(cvind)) == options.folds
                and all(i is not None and 1 <= i <= len(cvind) for i in indices)):
            folds = {image["id"]: f"fold{cvind[image['figshare_index'] - 1] - 1}"
                     for image in images}
            leaks = leaking_patients([(image["patient_id"], folds[image["id"]])
                                      for image in images])
            if not leaks:
                return folds
            issues.warn("cvind.mat", f"its folds split {len(leaks)} patient(s); "
                                     "making patient-level folds instead")
    fractions = fold_fractions(options.folds) if options.folds else parse_fractions(options.split)
    per_patient = Counter(image["patient_id"] for image in images)
    patients = assign_patients(dict(per_patient), fractions, options.seed)
    return {image["id"]: patients[image["patient_id"]] for image in images}


def prepare(options: PrepareOptions) -> PrepareResult:
    """Read, validate, write images and per-split COCO files; raise ``DatasetError`` if unusable."""
    if options.negative_ratio is not None and options.negative_ratio < 0:
        raise DatasetError("--negative-ratio must be >= 0")
    if options.folds is None and options.split:
        parse_fractions(options.split)  # fail before any work
    issues = Issues()
    class_names = list(TUMOR_TYPES) if options.classes == "type" else ["tumor"]
    out = Path(options.output)
    images, annotations, written = [], [], {}
    for sample in read_samples(options, issues):
        if sample.file_name in written:
            issues.skip(sample.source, f"duplicate file name {sample.file_name} "
                                       f"(already taken by {written[sample.file_name]})")
            continue
        anns = []
        for index, instance in enumerate(sample.instances):
            ann = build_annotation(instance, sample.height, sample.width, options.mask_format,
                                   instance.source or f"{sample.source} instance {index}",
                                   issues)
            if ann is not None:
                ann["category_id"] = _category(sample, instance.tumor_type, options)
                anns.append(ann)
        if not anns and not options.keep_negatives:
            issues.skip(sample.source, sample.empty_reason)
            continue
        try:
            write_image(sample, out / "images" / sample.file_name)
        except (OSError, ValueError, TypeError) as exc:
            issues.skip(sample.source, f"cannot write the image: {exc}")
            continue
        written[sample.file_name] = sample.source
        image_id = len(images) + 1
        entry = {"id": image_id, "file_name": sample.file_name, "width": sample.width,
                 "height": sample.height, "patient_id": str(sample.patient_id), **sample.extra}
        if sample.tumor_type:
            entry["tumor_type"] = sample.tumor_type
        images.append(entry)
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    if not images:
        first = f" (first: {issues.skipped[0][0]}: {issues.skipped[0][1]})" if issues.skipped \
            else ""
        raise DatasetError(f"nothing usable in {options.input or 'the --pair volumes'}: "
                           f"{len(issues.skipped)} item(s) skipped{first}")
    split_of = _split_of_images(images, options, issues)
    categories = [{"id": k + 1, "name": name, "supercategory": "tumor"}
                  for k, name in enumerate(class_names)]
    info = {"description": f"tumor-det prepare_dataset --format {options.format} "
                           f"--input {options.input}",
            "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    splits = {}
    for name in sorted(set(split_of.values()), key=_split_order):
        ids = {i for i, s in split_of.items() if s == name}
        splits[name] = {"info": info, "licenses": [], "categories": categories,
                        "images": [i for i in images if i["id"] in ids],
                        "annotations": [a for a in annotations if a["image_id"] in ids]}
    ann_dir = out / "annotations"
    for name, coco in splits.items():
        write_json(ann_dir / f"{name}.json", coco)
    for stale in ann_dir.glob("*.json"):
        if _SPLIT_FILE.match(stale.name) and stale.stem not in splits:
            os.remove(stale)  # from an earlier run with other splits: it would be registered
    result = PrepareResult(out, splits, issues, class_names)
    write_text(out / "prepare_summary.txt", result.summary(max_skips=None) + "\n")
    return result


def _split_order(name: str) -> tuple:
    order = {"train": 0, "val": 1, "test": 2, "all": 3}
    digits = re.sub(r"\D", "", name)
    return (order.get(name, 4), int(digits) if digits else 0)
