"""The skip-empty-slices rule: which slices of a volume show anatomy.

:func:`anatomy_slices` is a cheap foreground test;
:meth:`tumor_det.inference.predictor.TumorPredictor.predict_volume` does not run the slices
without anatomy (``tools/splash.py``'s default; ``--all-slices`` runs every slice).
"""

from __future__ import annotations

import numpy as np

#: :func:`anatomy_slices`: a 4x4 block is foreground when its mean is above this fraction of
#: the volume's intensity window...
ANATOMY_LEVEL = 0.1
#: ... and a slice shows anatomy when at least this fraction of its blocks (and 4) are.
ANATOMY_FRACTION = 0.002
ANATOMY_BLOCK = 4


def anatomy_slices(slices: np.ndarray, level: float = ANATOMY_LEVEL,
                   fraction: float = ANATOMY_FRACTION,
                   percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Which of a volume's (K, H, W) slices show anatomy: a cheap foreground test, (K,) bool.

    The volume's intensity window ``lo``/``hi`` is its ``percentiles`` (the intensity rule's
    0.5/99.5, over the whole volume, every second voxel along each axis). Each slice is cut
    into 4x4-pixel blocks; a block is foreground when its mean is above ``lo + level * (hi -
    lo)`` (10 % of the window); a slice shows anatomy when at least ``fraction`` of its blocks
    (0.2 %, and at least 4: 64 pixels) are foreground. Air outside the head (MRI noise: a few %
    of tissue intensity, and averaging 16 pixels divides its spread by 4) and the zero
    background of skull-stripped scans (BraTS) stay below the level; a slice that cuts the
    head anywhere (scalp, skull marrow, brain, tumor) has far more foreground than 0.2 % of its
    area (115 pixels of 240x240). A volume without contrast (``hi == lo``) counts as all
    anatomy. Slices without anatomy are not run by
    :meth:`tumor_det.inference.predictor.TumorPredictor.predict_volume` (no tumor there); the
    others are predicted exactly as before. A fraction of a second for a 240x240x155 volume.
    """
    slices = np.asarray(slices)
    k = slices.shape[0]
    if k == 0:
        return np.zeros(0, bool)
    sample = slices[::2, ::2, ::2]
    finite = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) \
        else sample.ravel()
    if finite.size == 0:
        return np.ones(k, bool)
    lo, hi = (float(v) for v in np.percentile(finite, percentiles))
    if not hi > lo:
        return np.ones(k, bool)
    threshold = lo + level * (hi - lo)
    b = ANATOMY_BLOCK if min(slices.shape[1:]) >= ANATOMY_BLOCK else 1
    h, w = (slices.shape[1] // b) * b, (slices.shape[2] // b) * b
    blocks = slices[:, :h, :w].astype(np.float32).reshape(k, h // b, b, w // b, b)
    means = np.nan_to_num(blocks.mean(axis=(2, 4)), nan=lo)
    count = (means.reshape(k, -1) > threshold).sum(axis=1)
    need = max(4, int(np.ceil(fraction * means[0].size)))
    return count >= need
