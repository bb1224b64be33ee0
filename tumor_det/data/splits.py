"""Patient-level splits: all slices of a patient go to one split (no leakage between splits).

Patients are shuffled with ``seed``; each split first gets one patient, then every next patient
goes to the split furthest below its target share of images, so image counts follow the
fractions as closely as whole patients allow.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from tumor_det.data.records import DatasetError

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


def assign_patients(images_per_patient: dict[str, int], fractions: dict[str, float],
                    seed: int = 0) -> dict[str, str]:
    """``{patient: split}`` with image counts close to ``fractions`` (see module docstring)."""
    patients = sorted(images_per_patient)
    if len(patients) < len(fractions):
        raise DatasetError(f"{len(fractions)} splits asked for, but only {len(patients)} "
                           "patient(s): a patient-level split needs at least one per split")
    random.Random(seed).shuffle(patients)
    total = sum(images_per_patient.values())
    counts: Counter = Counter()
    assignment = {}
    ordered = sorted(fractions, key=lambda name: -fractions[name])
    for patient, split in zip(patients, ordered, strict=False):
        assignment[patient] = split
        counts[split] += images_per_patient[patient]
    for patient in patients[len(ordered):]:
        split = max(ordered, key=lambda name: fractions[name] * total - counts[name])
        assignment[patient] = split
        counts[split] += images_per_patient[patient]
    return assignment


def fold_fractions(folds: int) -> dict[str, float]:
    """``K`` equal folds named ``fold0..fold{K-1}``."""
    if folds < 2:
        raise DatasetError(f"--folds needs at least 2 folds, got {folds}")
    return {f"fold{k}": 1.0 / folds for k in range(folds)}


def leaking_patients(split_of_image: Sequence[tuple[str, str]]) -> set[str]:
    """Patients whose images ``(patient, split)`` fall in more than one split."""
    seen: dict[str, set[str]] = {}
    for patient, split in split_of_image:
        seen.setdefault(patient, set()).add(split)
    return {patient for patient, splits in seen.items() if len(splits) > 1}
