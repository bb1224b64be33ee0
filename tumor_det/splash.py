"""Render predictions: the colour splash, an outline overlay and video frames.

The colour splash is the old Keras Mask R-CNN project's: the whole image in greyscale, the
tumor region in its original colours. On grey MRI the original colours are grey too, so
``tint`` (a BGR colour) blends the tumor region with a colour to make it visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: BGR outline colours, one per instance (cycled).
PALETTE = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0))
RED = (0, 0, 255)


def color_splash(image: np.ndarray, mask: np.ndarray,
                 tint: tuple[int, int, int] | None = None, alpha: float = 0.5) -> np.ndarray:
    """Greyscale image with the ``mask`` region in its original colours (BGR uint8 HxWx3).

    With ``tint``, the mask region is ``(1 - alpha) * original + alpha * tint`` instead.
    """
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    inside = image
    if tint is not None:
        inside = cv2.addWeighted(image, 1.0 - alpha, np.full_like(image, tint), alpha, 0.0)
    return np.where(mask[:, :, None], inside, grey)


def display_scale(shape: Sequence[int], min_side: int = 256) -> int:
    """Integer upscaling factor that makes a small image at least ``min_side`` px (>= 1)."""
    return max(1, -(-min_side // max(1, min(shape[:2]))))


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour integer upscaling (pixels stay visible as pixels)."""
    if scale == 1:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def draw_overlay(image: np.ndarray, masks: np.ndarray, scores: Sequence[float],
                 classes: Sequence[int], class_names: Sequence[str],
                 min_side: int = 256) -> np.ndarray:
    """The image (upscaled when small) with each instance outlined and labelled "name score"."""
    scale = display_scale(image.shape, min_side)
    canvas = np.ascontiguousarray(upscale(image, scale))
    thickness = max(1, round(min(canvas.shape[:2]) / 256))
    font_scale = 0.4 * thickness
    for i, (mask, score, cls) in enumerate(zip(masks, scores, classes, strict=True)):
        colour = PALETTE[i % len(PALETTE)]
        big = upscale(mask.astype(np.uint8), scale)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, thickness, cv2.LINE_AA)
        ys, xs = np.nonzero(big)
        if len(xs) == 0:
            continue
        name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
        label = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        x = int(min(xs.min(), canvas.shape[1] - tw - 1))
        y = int(ys.min()) - 3
        if y - th < 0:
            y = min(int(ys.max()) + th + 3, canvas.shape[0] - base)
        cv2.putText(canvas, label, (max(0, x), y), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(canvas, label, (max(0, x), y), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    colour, thickness, cv2.LINE_AA)
    return canvas


def video_frame(image: np.ndarray, scale: int = 1, caption: str = "") -> np.ndarray:
    """A frame for ``cv2.VideoWriter``: upscaled, even-sized (mp4v needs it), captioned."""
    frame = upscale(image, scale)
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=0)
    if caption:
        frame = np.ascontiguousarray(frame)
        cv2.putText(frame, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return frame
