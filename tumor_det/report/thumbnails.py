"""Key slices as small PNG data URIs: ground-truth and prediction outlines in two colours."""

from __future__ import annotations

from tumor_det.report.plots import png_data_uri

import cv2
import numpy as np

#: Outline colours (BGR): ground truth green, prediction red (as the legend of the page).
GT_COLOUR = (74, 194, 25)
PRED_COLOUR = (48, 59, 255)
#: Longest side of a thumbnail, in pixels.
THUMB = 160


def _grey_to_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        lo, hi = np.percentile(image, (0.5, 99.5)) if image.size else (0, 1)
        image = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255)
        image = image.astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image.copy()


def outlined(image: np.ndarray | None, gt: np.ndarray | None = None,
             pred: np.ndarray | None = None, size: int = THUMB) -> np.ndarray:
    """``image`` (grey or BGR; black when None) scaled so its longest side is ``size``, with the
    outlines of the bool masks ``gt`` (green) and ``pred`` (red) drawn over it."""
    shape = next(a.shape[:2] for a in (image, gt, pred) if a is not None)
    base = np.zeros((*shape, 3), np.uint8) if image is None else _grey_to_bgr(image)
    scale = size / max(shape)
    h, w = max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))
    out = cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else
                     cv2.INTER_LINEAR)
    for mask, colour in ((gt, GT_COLOUR), (pred, PRED_COLOUR)):
        if mask is None or not np.any(mask):
            continue
        small = cv2.resize(np.asarray(mask, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 1, lineType=cv2.LINE_8)
    return out


def thumbnail_uri(image: np.ndarray | None, gt: np.ndarray | None = None,
                  pred: np.ndarray | None = None, size: int = THUMB) -> str:
    """:func:`outlined` as a PNG data URI."""
    ok, png = cv2.imencode(".png", outlined(image, gt, pred, size))
    if not ok:
        raise ValueError("could not encode a thumbnail")
    return png_data_uri(png.tobytes())


def image_uri(image: np.ndarray, size: int = 2 * THUMB) -> str:
    """An image (e.g. a splash overlay) scaled to ``size`` as a PNG data URI."""
    return thumbnail_uri(image, size=size)


def key_slice(gt: np.ndarray | None, pred: np.ndarray | None) -> int:
    """The key slice of (K, rows, cols) masks: the largest tumor, else the largest prediction
    (the worst false positive), else the middle slice."""
    for stack in (gt, pred):
        if stack is not None and np.any(stack):
            return int(np.argmax(np.asarray(stack).reshape(len(stack), -1).sum(axis=1)))
    stack = gt if gt is not None else pred
    return len(stack) // 2 if stack is not None else 0
