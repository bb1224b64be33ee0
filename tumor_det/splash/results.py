"""What a splash run hands to its output sink: one typed result per input, and the sink's shape.

:mod:`tumor_det.splash.runner` makes the results and calls a :class:`Sink`;
:class:`tumor_det.splash.sink.SplashSink` is the sink that writes files. Both import this module,
neither the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tumor_det.inference.results import TumorPrediction, VolumePrediction
from tumor_det.io import Source, Video
from tumor_det.io.geometry import Volume


@dataclass
class ImageResult:
    """A 2D image or DICOM file and its prediction."""

    source: Source
    prediction: TumorPrediction


@dataclass
class VolumeResult:
    """A NIfTI volume or DICOM series (a :class:`~tumor_det.io.dicom.DicomSeries`) and its
    prediction (masks in the volume's grid)."""

    source: Source
    volume: Volume
    prediction: VolumePrediction


@dataclass
class VideoResult:
    """A video: its frame rate and the frame predictions, made while they are consumed."""

    source: Source
    video: Video
    frames: Iterator[TumorPrediction]


class Sink(Protocol):
    """Where :func:`tumor_det.splash.runner.run` puts each result (or why an input was
    skipped)."""

    def write_image(self, result: ImageResult) -> None: ...

    def write_volume(self, result: VolumeResult) -> None: ...

    def write_video(self, result: VideoResult) -> None: ...

    def skip(self, path: Path | str, reason: str) -> None: ...
