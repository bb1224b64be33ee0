"""MRI volumes with label volumes (NIfTI) -> 2D :class:`Sample` slices.

Inputs: BraTS-style folders (``<case>_t1ce.nii.gz`` + ``<case>_seg.nii.gz``, ``_`` or ``-``
before the suffix), Medical Segmentation Decathlon folders (``imagesTr/`` + ``labelsTr/`` with
the same names; 4D images give ``channel``), or explicit ``(image, label)`` pairs.

Volumes are read by :func:`tumor_det.io.load_nifti` and sliced by
:func:`tumor_det.io.geometry.display_slices`, the rule inference uses: each volume is reoriented to
its closest RAS+ grid (as ``nibabel.as_closest_canonical`` does), so any stored orientation gives
the same slices, shown in the radiological convention:

* axial: anterior at the top, the patient's right on the image's left (left on the right);
* coronal: superior at the top, the patient's right on the image's left;
* sagittal: superior at the top, anterior on the image's left.

``slice_index`` is the canonical index along the slicing axis; ``pixel_spacing`` is
``[row_mm, col_mm]`` from the affine's voxel sizes. Label values > 0 (or those in
``label_values``, e.g. BraTS 1/2/4) are tumor; each 8-connected component is one instance.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from tumor_det.data.records import DatasetError, Instance, Issues, Sample
from tumor_det.data.validation import components
from tumor_det.io.base import InputError, file_stem
from tumor_det.io.geometry import PLANES, display_slices
from tumor_det.io.nifti import load_nifti

import numpy as np

AXES = PLANES  # the --axis choices
#: image suffixes tried for BraTS-style cases, in order, when no modality is given.
MODALITIES = ("t1ce", "t1c", "t1gd", "flair", "t2f", "t2", "t2w", "t1", "t1n")
_SEG = re.compile(r"^(?P<case>.+?)[_-]seg$", re.IGNORECASE)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.nii*")
                  if not p.name.startswith(".") and p.name.endswith((".nii", ".nii.gz")))


def find_volume_pairs(root: Path, modality: str | None = None,
                      ) -> list[tuple[str, Path, Path]]:
    """``(volume name, image, label)`` for an MSD or BraTS-style folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"input folder not found: {root}")
    if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        pairs = []
        for image in _nifti_files(root / "imagesTr"):
            stem = file_stem(image)
            case = re.sub(r"_\d{4}$", "", stem)  # nnU-Net channel suffix
            label = next((root / "labelsTr" / f"{s}{image.name[len(stem):]}"
                          for s in (stem, case)
                          if (root / "labelsTr" / f"{s}{image.name[len(stem):]}").is_file()),
                         root / "labelsTr" / image.name)
            pairs.append((case, image, label))
        return pairs
    pairs = []
    order = (modality,) if modality else MODALITIES
    for label in sorted(p for p in root.rglob("*.nii*") if _SEG.match(file_stem(p))):
        case = _SEG.match(file_stem(label)).group("case")
        candidates = {file_stem(p)[len(case) + 1:].lower(): p
                      for p in _nifti_files(label.parent)
                      if file_stem(p).startswith(case) and p != label}
        image = next((candidates[m] for m in order if m in candidates), None)
        if image is None:
            image = label.parent / f"{case}_{order[0]}.nii.gz"
        pairs.append((case, image, label))
    return pairs


def read_volume(name: str, image_path: Path, label_path: Path, issues: Issues, *,
                axis: str = "axial", channel: int = 0,
                label_values: Sequence[int] | None = None, keep_negatives: bool = False,
                negative_ratio: float | None = None, seed: int = 0) -> Iterator[Sample]:
    """The slices of one volume along ``axis``; tumor-free ones only with ``keep_negatives``."""
    item = f"{name} ({Path(image_path).name})"
    for path in (image_path, label_path):
        if not Path(path).is_file():
            issues.skip(item, f"volume file not found: {path}")
            return
    try:
        image_volume = load_nifti(image_path, channel)
        label_volume = load_nifti(label_path)
    except InputError as exc:
        issues.skip(item, str(exc))
        return
    image, spacing = display_slices(image_volume, axis)
    labels, _ = display_slices(label_volume, axis)
    if image.shape != labels.shape:
        issues.skip(item, f"image {image.shape} and label {labels.shape} shapes differ")
        return
    if not np.allclose(image_volume.affine, label_volume.affine, atol=1e-3):
        issues.warn(item, "image and label affines differ; slicing them voxel for voxel")
    labels = np.rint(np.asarray(labels)).astype(np.int64)
    tumor = np.isin(labels, list(label_values)) if label_values else labels > 0
    positive = tumor.any(axis=(1, 2))
    chosen = list(np.flatnonzero(positive))
    negatives = np.flatnonzero(~positive)
    if keep_negatives:
        count = len(negatives)
        if negative_ratio is not None:
            count = min(count, int(round(negative_ratio * len(chosen))))
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        chosen += list(rng.choice(negatives, size=count, replace=False)) if count else []
    issues.dropped_negatives += len(negatives) - (len(chosen) - int(positive.sum()))
    for index in sorted(int(i) for i in chosen):
        plane = np.ascontiguousarray(image[index])
        yield Sample(
            source=f"{name} {axis} slice {index}", file_name=f"{name}_{axis}_{index:03d}.png",
            patient_id=name, width=plane.shape[1], height=plane.shape[0],
            instances=[Instance(mask=c) for c in components(tumor[index])],
            pixels=lambda plane=plane: plane,
            extra={"slice_index": index, "pixel_spacing": list(spacing)},
            empty_reason="no tumor in this slice",
        )


def read_nifti(root: Path | None, issues: Issues, *, pairs: Sequence[Sequence[Path]] = (),
               modality: str | None = None, **options) -> Iterator[Sample]:
    """Slices of every volume pair found under ``root`` and of the explicit ``pairs``."""
    found = find_volume_pairs(root, modality) if root is not None else []
    for image, label in pairs:
        stem = file_stem(image)
        found.append((re.sub(r"([_-](" + "|".join(MODALITIES) + r")|_\d{4})$", "", stem,
                             flags=re.IGNORECASE), Path(image), Path(label)))
    if not found:
        raise DatasetError(f"no image/label volume pairs found in {root} "
                           "(expected <case>_t1ce.nii.gz + <case>_seg.nii.gz, or imagesTr/ + "
                           "labelsTr/)")
    names = [name for name, _, _ in found]
    for name, image, label in found:
        if names.count(name) > 1:
            name = file_stem(image)
        yield from read_volume(name, image, label, issues, **options)
