"""2D image files (PNG, JPEG, TIFF, BMP; 8/16-bit, grey or colour) through OpenCV.

Pixels are read as OpenCV reads them (``IMREAD_UNCHANGED``: BGR order, alpha and bit depth
kept). OpenCV decodes a truncated JPEG with a grey missing part and only prints "Premature end
of JPEG file", so every file is first fully decoded by PIL (:func:`open_complete`, the check
training data goes through), which raises on a truncated file.
"""

from __future__ import annotations

from pathlib import Path

from tumor_det.io.base import Image2D, InputError, ReaderWriter
from tumor_det.utils.atomic import atomic_path

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def open_complete(path: Path) -> Image.Image:
    """Open and fully decode ``path`` with PIL; ``OSError`` (or ``ValueError``) when unusable.

    A truncated file raises ``OSError("image file is truncated ...")`` here, not at open(),
    as long as ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` stays False (its default).
    """
    image = Image.open(path)
    image.load()
    return image


def is_truncated(path: Path) -> bool:
    """True when PIL finds the file's image data cut short.

    Other PIL failures (a format or mode PIL lacks) are left to OpenCV to judge.
    """
    try:
        with open_complete(path):
            return False
    except OSError as exc:
        return "truncated" in str(exc)
    except (ValueError, SyntaxError, EOFError):
        return False


def read_image(path: Path) -> Image2D:
    """An 8/16-bit, grey or colour image as OpenCV reads it (BGR order, alpha kept)."""
    try:
        truncated = is_truncated(path)
    except Image.DecompressionBombError as exc:  # a header claiming billions of pixels
        raise InputError(f"image too large ({exc})") from exc
    if truncated:
        raise InputError("truncated image")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputError("unreadable or corrupt image")
    return Image2D(image)


def write_mask_png(seg: np.ndarray, path: Path) -> Path:
    """A 2D mask as an 8-bit PNG: 0 background, 255 tumor (label maps keep their values)."""
    data = seg.astype(np.uint8) * 255 if seg.dtype == bool else seg.astype(np.uint8)
    ok, buf = cv2.imencode(".png", data)
    if not ok:
        raise OSError(f"cannot encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return Path(path)


class ImageFileIO(ReaderWriter):
    """PNG/JPEG/TIFF/BMP files."""

    kind = "image"
    suffixes = IMAGE_SUFFIXES

    def read(self, *paths: Path) -> Image2D:
        (path,) = paths
        return read_image(path)

    def write_seg(self, seg: np.ndarray, path: Path, like: Image2D) -> Path:
        return write_mask_png(seg, path)
