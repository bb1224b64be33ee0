"""Videos: a frame iterator (OpenCV, BGR frames) and the frame rate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tumor_det.io.base import InputError, ReaderWriter

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v", ".wmv")


@dataclass
class Video:
    """An opened video; iterating it reads its frames once and releases the file."""

    path: Path
    fps: float
    _cap: cv2.VideoCapture

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while True:
                grabbed, frame = self._cap.read()
                if not grabbed:
                    return
                yield frame
        finally:
            self.close()

    def close(self) -> None:
        self._cap.release()


def open_video(path: Path) -> Video:
    """Open a video; its frame rate is 25 when the file does not say."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError("cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS)
    return Video(Path(path), float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0, cap)


class VideoIO(ReaderWriter):
    """Video files (read only)."""

    kind = "video"
    suffixes = VIDEO_SUFFIXES

    def read(self, *paths: Path) -> Video:
        (path,) = paths
        return open_video(path)
