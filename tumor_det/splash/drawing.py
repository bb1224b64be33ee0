"""Render predictions: the colour splash, an overlay (Detectron2's Visualizer), video frames.

The colour splash is the old Keras Mask R-CNN project's: the whole image in greyscale, the
tumor region in its original colours. On grey MRI the original colours are grey too, so
``tint`` (a BGR colour) blends the tumor region with a colour to make it visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from detectron2.utils.visualizer import ColorMode, Visualizer

#: BGR instance colours of the overlay, one per instance (cycled).
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
    """The BGR image (upscaled when small) with each instance's mask drawn and labelled
    "name score" by Detectron2's ``Visualizer`` (``ColorMode.IMAGE``: the rest is untouched)."""
    scale = display_scale(image.shape, min_side)
    if len(masks) == 0:
        return upscale(image, scale)
    labels = [f"{class_names[c] if 0 <= c < len(class_names) else c} {s:.2f}"
              for c, s in zip(classes, scores, strict=True)]
    colours = [np.array(PALETTE[i % len(PALETTE)][::-1]) / 255 for i in range(len(masks))]
    visualizer = Visualizer(image[:, :, ::-1], scale=scale, instance_mode=ColorMode.IMAGE)
    drawn = visualizer.overlay_instances(masks=np.asarray(masks, bool), labels=labels,
                                         assigned_colors=colours)
    return np.ascontiguousarray(drawn.get_image()[:, :, ::-1])


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
