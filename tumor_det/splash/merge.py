"""Join the done markers of a run's parts into the tables of a single run.

Each input's done marker (:mod:`tumor_det.splash.shards`) holds its ``results.csv`` rows and
COCO records. :func:`combine` orders markers by run order and numbers ``image_id`` 1, 2, ... over
the processed inputs, as one :class:`~tumor_det.splash.sink.SplashSink` does, so
``results.json``/``results.csv`` written from them are byte for byte a single run's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tumor_det.io import UsageError
from tumor_det.splash.shards import MARKER_DIR, read_marker
from tumor_det.splash.sink import Report
from tumor_det.splash.writers import OutputGuard, write_csv, write_json


def combine(markers: Iterable[dict]) -> Report:
    """The run's report from its inputs' markers: rows and records in run order, ``image_id``
    1..n over the processed inputs (every record of an input shares its id), skips and
    warnings."""
    report = Report()
    image_id = 0
    for marker in sorted(markers, key=lambda m: m["order"]):
        if marker["status"] != "done":
            report.skipped.append((marker["file"], marker.get("reason", "")))
            continue
        image_id += 1
        report.rows += marker["rows"]
        report.records += [{**r, "image_id": image_id} for r in marker["records"]]
        report.warnings += [tuple(w) for w in marker.get("warnings", [])]
    return report


def write_tables(output: Path, report: Report, guard: OutputGuard | None = None) -> None:
    """``results.json`` (COCO records) and ``results.csv`` (one row per input), as
    :meth:`~tumor_det.splash.sink.SplashSink.write_results` writes them."""
    write_json(Path(output) / "results.json", report.records, guard)
    write_csv(Path(output) / "results.csv", report.rows, guard)


@dataclass
class Merged:
    """Markers found for one run, and how many of its inputs have none (yet)."""

    markers: list[dict]
    total: int
    missing: int


def load_markers(folders: Sequence[str | Path]) -> Merged:
    """The done markers in ``<folder>/done/`` of each folder, one per input (a done marker
    wins over a skip). Raises :class:`UsageError` when there are none or they come from
    runs over different input lists."""
    by_order: dict[int, dict] = {}
    runs: dict[str, int] = {}
    for folder in folders:
        if not Path(folder).is_dir():
            raise UsageError(f"--merge {folder}: no such folder")
        for path in sorted((Path(folder) / MARKER_DIR).glob("*.json")):
            marker = read_marker(path)
            if marker is None:
                continue
            runs[marker["run"]] = marker["total"]
            old = by_order.get(marker["order"])
            if old is None or (old["status"] != "done" and marker["status"] == "done"):
                by_order[marker["order"]] = marker
    if not runs:
        raise UsageError(f"--merge: no done markers in {', '.join(map(str, folders))}/{MARKER_DIR}")
    if len(runs) > 1:
        raise UsageError(f"--merge: the markers come from {len(runs)} runs over different "
                         "input lists; run the parts with the same inputs (or --continue "
                         "with the full list)")
    total = next(iter(runs.values()))
    return Merged(list(by_order.values()), total, total - len(by_order))
