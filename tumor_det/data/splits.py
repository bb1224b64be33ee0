"""Patient-level splits: all slices of a patient go to one split (no leakage between splits).

``--folds K``: scikit-learn's ``StratifiedGroupKFold`` (groups = patients, labels = the
images' strata, e.g. tumor types), so each fold gets a share of every tumor type and about
``1/K`` of the images.

``--split train,val,test``: scikit-learn has no grouped split into three parts balanced by image
counts (``GroupShuffleSplit`` makes two parts and counts patients, not images), so
:func:`assign_patients` is a small greedy rule: patients are shuffled with ``seed`` (strata
spread evenly over that order), each split first gets one patient, then every next patient goes
to the split furthest below its target share of images, first within the patient's stratum,
then overall.

Without patient ids (Br35H, the YOLO boxes of Figshare), each image is its own group, unless
:func:`patient_block` groups numbered files into blocks of neighbouring numbers
(``--patient-blocks N``).
"""

from __future__ import annotations

import random
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from tumor_det.data.records import DatasetError

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def parse_fractions(text: str) -> dict[str, float]:
    """``"0.7,0.15,0.15"`` -> ``{"train": 0.7, "val": 0.15, "test": 0.15}`` (zeros dropped)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise DatasetError(f"--split expects fractions like 0.7,0.15,0.15, got {text!r}") from exc
    if not 1 <= len(values) <= 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 0.01:
        raise DatasetError(f"--split needs 1 to 3 non-negative fractions (train,val,test) that "
                           f"sum to 1, got {text!r}")
    return {name: v for name, v in zip(SPLIT_NAMES, values, strict=False) if v > 0}


def _spread_strata(patients: list[str], strata: Mapping[str, str]) -> list[str]:
    """``patients`` reordered so that each stratum is spread evenly over the list.

    The k-th of a stratum's n patients goes to position ~(k + 0.5) / n; ties keep the given
    order, so with one stratum the order is unchanged.
    """
    members: dict[str, list[str]] = defaultdict(list)
    for patient in patients:
        members[strata.get(patient, "")].append(patient)
    position = {p: (k + 0.5) / len(group) for group in members.values()
                for k, p in enumerate(group)}
    return sorted(patients, key=position.__getitem__)


def assign_patients(images_per_patient: dict[str, int], fractions: dict[str, float],
                    seed: int = 0, strata: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{patient: split}`` with image counts close to ``fractions`` (see module docstring).

    ``strata`` (``{patient: label}``, e.g. tumor type) spreads each label over the splits.
    """
    patients = sorted(images_per_patient)
    if len(patients) < len(fractions):
        raise DatasetError(f"{len(fractions)} splits asked for, but only {len(patients)} "
                           "patient(s): a patient-level split needs at least one per split")
    random.Random(seed).shuffle(patients)
    strata = strata or {}
    patients = _spread_strata(patients, strata)
    totals: Counter = Counter()  # images per stratum, and overall under None
    for patient in patients:
        totals[strata.get(patient, "")] += images_per_patient[patient]
        totals[None] += images_per_patient[patient]
    counts: dict[str | None, Counter] = defaultdict(Counter)
    assignment = {}
    ordered = sorted(fractions, key=lambda name: -fractions[name])

    def deficit(name: str, stratum: str | None) -> float:
        return fractions[name] * totals[stratum] - counts[stratum][name]

    for k, patient in enumerate(patients):
        stratum = strata.get(patient, "")
        split = ordered[k] if k < len(ordered) else max(
            ordered, key=lambda name: (deficit(name, stratum), deficit(name, None)))
        assignment[patient] = split
        counts[stratum][split] += images_per_patient[patient]
        counts[None][split] += images_per_patient[patient]
    return assignment


def fold_fractions(folds: int) -> dict[str, float]:
    """``K`` equal folds named ``fold0..fold{K-1}``."""
    if folds < 2:
        raise DatasetError(f"--folds needs at least 2 folds, got {folds}")
    return {f"fold{k}": 1.0 / folds for k in range(folds)}


def patient_folds(patients: Sequence[str], strata: Sequence[str] | None, folds: int,
                  seed: int = 0) -> dict[str, str]:
    """``{patient: "fold<k>"}`` from per-image ``patients`` and ``strata`` (e.g. tumor types).

    scikit-learn's ``StratifiedGroupKFold(shuffle=True, random_state=seed)``. Without strata
    (or when every stratum has fewer images than folds, which it refuses) all images share one
    label, and it then balances the folds' image counts.
    """
    # Imported here: scikit-learn takes about half a second to import, and the catalog
    # imports this module (for SPLIT_NAMES) on every start.
    from sklearn.model_selection import StratifiedGroupKFold

    names = list(fold_fractions(folds))
    if len(set(patients)) < folds:
        raise DatasetError(f"--folds {folds} needs at least {folds} patients, "
                           f"got {len(set(patients))}")
    labels = list(strata) if strata is not None else []
    if not labels or max(Counter(labels).values()) < folds:
        labels = ["all"] * len(patients)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class in y has only N members": fine, that stratum just
        # cannot reach every fold.
        warnings.simplefilter("ignore", UserWarning)
        tests = list(splitter.split(np.zeros(len(patients)), labels, list(patients)))
    return {patients[i]: names[k] for k, (_, test) in enumerate(tests) for i in test}


def leaking_patients(split_of_image: Sequence[tuple[str, str]]) -> set[str]:
    """Patients whose images ``(patient, split)`` fall in more than one split."""
    seen: dict[str, set[str]] = {}
    for patient, split in split_of_image:
        seen.setdefault(patient, set()).add(split)
    return {patient for patient, splits in seen.items() if len(splits) > 1}


def patient_block(folder: str, number: int, size: int) -> str:
    """The group of file ``<folder>/<number>.<ext>`` with ``--patient-blocks size``:
    ``"<folder>/<first>-<last>"``, the ``size`` neighbouring numbers ``number // size`` holds.

    For releases without patient ids whose files are numbered patient after patient (the
    Figshare slices: a patient's slices have neighbouring numbers; the folder is the class
    folder, e.g. ``figshare_boxes/0``), so that the splits keep each block, and so nearly each
    patient, in one split. Caveat: a patient whose numbers straddle a block boundary (e.g.
    ``1098-1103`` with blocks of 100) lands in two blocks, which may go to two splits; larger
    blocks make that rarer (about one patient per boundary) but give the splits fewer, coarser
    groups to balance.
    """
    if size < 1:
        raise DatasetError(f"--patient-blocks must be at least 1, got {size}")
    first = number // size * size
    block = f"{first}-{first + size - 1}"
    return f"{folder}/{block}" if folder not in ("", ".") else block
