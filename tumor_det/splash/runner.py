"""Run the predictor over splash inputs: one function per input kind, composed by :func:`run`.

Like Detectron2's ``demo/predictor.py``, the run is built from small parts: each ``predict_*``
function reads one kind of input (through :mod:`tumor_det.io`), batches it with
:func:`~tumor_det.utils.batching.batched` and returns a typed result; :func:`run` hands every
result to an output sink (a :class:`~tumor_det.splash.results.Sink`, e.g.
:class:`~tumor_det.splash.sink.SplashSink`) and records what was skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from tumor_det.inference.lesions import LesionRules
from tumor_det.inference.predictor import TumorPredictor
from tumor_det.io import KINDS_2D, InputError, Source, reader_for
from tumor_det.splash.results import ImageResult, Sink, VideoResult, VolumeResult
from tumor_det.splash.writers import OutputError
from tumor_det.utils.batching import batched

import numpy as np
from tqdm import tqdm

logger = logging.getLogger("tumor_det.splash.drawing")

Skip = Callable[[Source, str], None]


def _read_2d(predictor: TumorPredictor, sources: Iterable[Source],
             on_skip: Skip) -> Iterator[tuple[Source, np.ndarray, tuple[float, float] | None]]:
    """(source, 8-bit BGR model input, pixel spacing) of each readable 2D source."""
    for src in sources:
        try:
            image = reader_for(src.kind).read(src.path)
            prepared = predictor.prepare(image.pixels, rgb=image.rgb)
        except (InputError, ValueError, TypeError) as exc:
            on_skip(src, str(exc))
            continue
        yield src, prepared, image.spacing


def predict_images(predictor: TumorPredictor, sources: Iterable[Source], batch_size: int,
                   on_skip: Skip) -> Iterator[ImageResult]:
    """Predict 2D sources ``batch_size`` per forward pass; unreadable ones go to ``on_skip``."""
    for batch in batched(_read_2d(predictor, sources, on_skip), batch_size):
        preds = predictor.predict_batch([image for _, image, _ in batch],
                                        pixel_spacing=[spacing for _, _, spacing in batch])
        for (src, _, _), pred in zip(batch, preds, strict=True):
            yield ImageResult(src, pred)


def predict_volume(predictor: TumorPredictor, source: Source, batch_size: int,
                   rules: LesionRules | None = None) -> VolumeResult:
    """Read a NIfTI volume or DICOM series, predict it slice by slice, keep the lesions that
    pass ``rules``."""
    volume = reader_for(source.kind).read(*source.paths)
    return VolumeResult(source, volume,
                        predictor.predict_volume(volume, batch_size=batch_size, rules=rules))


def predict_video(predictor: TumorPredictor, source: Source, batch_size: int) -> VideoResult:
    """Open a video; its frames are predicted ``batch_size`` at a time as they are consumed."""
    video = reader_for(source.kind).read(source.path)
    frames = (pred for batch in batched(video, batch_size)
              for pred in predictor.predict_batch(batch))
    return VideoResult(source, video, frames)


def run(predictor: TumorPredictor, sources: Sequence[Source], sink: Sink,
        batch_size: int = 4, rules: LesionRules | None = None) -> None:
    """2D inputs in batches, then volumes and videos; every output goes to ``sink``.

    A source that cannot be read, predicted or written is skipped with the reason. ``rules``
    filter the 3D lesions of volumes (default :class:`~tumor_det.inference.lesions.LesionRules`).
    """
    batch_size = max(1, batch_size)
    images = [s for s in sources if s.kind in KINDS_2D]
    others = [s for s in sources if s.kind not in KINDS_2D]
    with tqdm(total=len(sources), desc="splash", unit="input", dynamic_ncols=True) as bar:

        def skip(src: Source, reason: str) -> None:
            sink.skip(src.path, reason)
            bar.update(1)

        for result in predict_images(predictor, images, batch_size, skip):
            try:
                sink.write_image(result)
            except (OutputError, OSError) as exc:
                sink.skip(result.source.path, str(exc))
            bar.update(1)
        for src in others:
            try:
                if src.kind == "unsupported":
                    raise InputError(src.reason)
                if src.kind == "video":
                    sink.write_video(predict_video(predictor, src, batch_size))
                else:
                    sink.write_volume(predict_volume(predictor, src, batch_size, rules))
            except (InputError, OutputError, OSError) as exc:
                sink.skip(src.path, str(exc))
            except Exception as exc:  # noqa: BLE001 - one bad scan must not end the run
                logger.debug("%s failed", src.path, exc_info=True)
                sink.skip(src.path, f"failed: {type(exc).__name__}: {exc}")
            bar.update(1)
