"""The Figshare brain tumor release (Cheng et al. 2015) -> :class:`Sample` objects.

Each slice is a MATLAB v7.3 (HDF5) file ``<n>.mat`` with a struct ``cjdata``: ``image``
(int16), ``tumorMask``, ``tumorBorder``, ``label`` (1 meningioma, 2 glioma, 3 pituitary) and
``PID`` (the patient id as uint16 character codes). MATLAB writes arrays column-major, so h5py
reads each matrix transposed; they are transposed back here. ``cvind.mat`` (optional) holds the
published 5-fold split: ``cvind[i-1]`` is the fold (1..5) of ``<i>.mat``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from tumor_det.data.records import DatasetError, Instance, Issues, Sample, tumor_type_from_label
from tumor_det.data.validation import components

import h5py
import numpy as np

CVIND = "cvind.mat"
LOG = logging.getLogger(__name__)


def mat_files(root: Path) -> list[Path]:
    """The slice files under ``root`` (recursively), in numeric order ``1.mat, 2.mat...``."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DatasetError(f"input not found: {root}")
    files = [p for p in root.rglob("*.mat") if p.name != CVIND]

    def key(path: Path):
        return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)

    return sorted(files, key=key)


def _matlab_string(dataset: h5py.Dataset) -> str:
    codes = np.asarray(dataset).ravel()
    return "".join(chr(int(c)) for c in codes if int(c) != 0).strip()


def read_mat(path: Path) -> dict:
    """``image``, ``mask`` (bool), ``label`` (int) and ``pid`` (str) of one ``.mat`` slice."""
    with h5py.File(path, "r") as handle:
        data = handle["cjdata"]
        return {
            "image": np.asarray(data["image"]).T,
            "mask": np.asarray(data["tumorMask"]).T > 0,
            "label": int(np.asarray(data["label"]).ravel()[0]),
            "pid": _matlab_string(data["PID"]),
        }


def read_cvind(root: Path) -> np.ndarray | None:
    """The fold (1..K) of each file index from ``cvind.mat`` beside the slices, if present
    and readable (a ``cvind`` array of positive whole numbers); else None."""
    root = Path(root)
    path = next(iter(sorted(root.rglob(CVIND))), None) if root.is_dir() else None
    if path is None:
        return None
    try:
        with h5py.File(path, "r") as handle:
            values = np.asarray(handle["cvind"], dtype=float).ravel()
    except Exception as exc:  # noqa: BLE001 - h5py/numpy raise many types for a broken file
        LOG.warning("%s: unreadable (%s); making patient-level folds", path, exc)
        return None
    if values.size == 0 or not np.isfinite(values).all() or (values < 1).any() \
            or (values != np.round(values)).any() or values.max() > 2**31:
        LOG.warning("%s: cvind is not a list of fold numbers 1..K; making patient-level "
                    "folds", path)
        return None
    return values.astype(int)


def read_figshare(root: Path, issues: Issues) -> Iterator[Sample]:
    """One :class:`Sample` per readable ``.mat`` slice, written as ``<n>.png``."""
    files = mat_files(root)
    if not files:
        raise DatasetError(f"no .mat files in {root}")
    for path in files:
        item = path.name
        try:
            slice_ = read_mat(path)
        except Exception as exc:  # noqa: BLE001 - h5py/numpy raise many types for a bad file
            issues.skip(item, f"not a readable Figshare cjdata .mat (v7.3/HDF5) file: "
                              f"{type(exc).__name__}: {exc}")
            continue
        image, mask = slice_["image"], slice_["mask"]
        if image.ndim != 2 or mask.shape != image.shape or image.size == 0:
            issues.skip(item, f"image {image.shape} and tumorMask {mask.shape} do not match")
            continue
        tumor_type = tumor_type_from_label(slice_["label"])
        if tumor_type is None:
            issues.warn(item, f"unknown label {slice_['label']} (expected 1, 2 or 3)")
        number = re.sub(r"[^0-9A-Za-z_-]", "_", path.stem)
        yield Sample(
            source=item, file_name=f"{number}.png", patient_id=slice_["pid"] or path.stem,
            width=image.shape[1], height=image.shape[0],
            instances=[Instance(mask=c) for c in components(mask)],
            pixels=lambda image=image: image, tumor_type=tumor_type,
            extra={"figshare_index": int(path.stem)} if path.stem.isdigit() else {},
            empty_reason="empty tumorMask",
        )
