"""Near-duplicate images in one patient group, so that a copy never lands in another fold.

Public slice collections hold the same slice more than once, re-encoded (not byte-identical):
in the shared Br35H tumor-free slices 410 of 750 images fall into 159 groups of copies. Split
image by image, a held-out copy of a training slice inflates every held-out figure. Images are
compared on a 32x32 grey thumbnail: two whose thumbnails differ by less than ``max_diff`` grey
levels on average (re-encodings differ by < 1; different slices by tens) join one group
(transitively). No maintained library does this for a dataset split (perceptual-hash packages
give hashes, not the groups), hence this small module.
"""

from __future__ import annotations

from collections.abc import Iterable

from tumor_det.data.records import Issues, Sample

import cv2
import numpy as np

THUMB = 32
#: Mean absolute difference (0-255 grey levels) of two 32x32 thumbnails that are one image.
MAX_DIFF = 3.0


def thumbnail(sample: Sample) -> np.ndarray | None:
    """The 32x32 grey thumbnail of a sample's pixels (None when unreadable)."""
    try:
        if sample.image_path is not None and sample.copy_as_is:
            image = cv2.imread(str(sample.image_path), cv2.IMREAD_GRAYSCALE)
        elif sample.pixels is not None:
            image = np.asarray(sample.pixels())
            if image.ndim == 3:
                image = cv2.cvtColor(image[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
        else:
            return None
    except (OSError, ValueError):
        return None
    if image is None or image.size == 0:
        return None
    return cv2.resize(image.astype(np.float32), (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def duplicate_groups(thumbs: list[np.ndarray | None], max_diff: float = MAX_DIFF) -> list[int]:
    """For each thumbnail, the index of the first one of its near-duplicate group."""
    parent = list(range(len(thumbs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    valid = [i for i, t in enumerate(thumbs) if t is not None]
    if len(valid) > 1:
        flat = np.stack([thumbs[i].ravel() for i in valid])
        for a in range(len(valid)):  # one row of distances at a time: O(n) memory
            diff = np.abs(flat[a + 1:] - flat[a]).mean(axis=1)
            for b in np.nonzero(diff < max_diff)[0]:
                ra, rb = root(valid[a]), root(valid[a + 1 + int(b)])
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(len(thumbs))]


def group_near_duplicates(samples: Iterable[Sample], issues: Issues,
                          max_diff: float = MAX_DIFF) -> list[Sample]:
    """``samples`` with each group of near-duplicates sharing the first member's patient id
    (``--group-duplicates``); the number of images regrouped is one warning."""
    samples = list(samples)
    groups = duplicate_groups([thumbnail(s) for s in samples], max_diff)
    moved = 0
    for sample, first in zip(samples, groups, strict=True):
        if samples[first] is not sample and sample.patient_id != samples[first].patient_id:
            sample.patient_id = samples[first].patient_id
            moved += 1
    if moved:
        issues.warn("--group-duplicates",
                    f"{moved} near-duplicate image(s) put in the patient group of their copy")
    return samples
