"""Split a splash run into parts, record each finished input, and resume a stopped run.

The **run order** is the order :func:`tumor_det.splash.runner.run` processes inputs in: 2D inputs
first, then volumes and videos, each group in input order. Every mode (one process, a part of
``--num-parts N``, a Ray worker) names outputs, numbers ``image_id`` and orders the results
tables by it, so their outputs are the same files and rows.

* :func:`plan_run` fixes the run order, gives every input a run-unique stem (the rule of
  :meth:`~tumor_det.splash.sink.SplashSink.unique_stem`, applied in run order) and cuts the work
  into tasks: ``batch_size`` consecutive 2D inputs (one forward batch of a single run, so a part
  or a worker computes exactly what a single run does) or one volume/video.
* :func:`partition` deals tasks to ``N`` parts, balanced by file size (greedy, largest first).
* :class:`MarkerSink` writes each input's outputs through a
  :class:`~tumor_det.splash.sink.SplashSink`, then its **done marker**
  ``<output>/done/<stem>.json``: its results rows, COCO records and output files, written
  atomically *after* the outputs. A marker therefore means "every output of this input is
  complete"; :func:`completed` checks it (and that the files are still there) for ``--continue``,
  and :mod:`tumor_det.splash.merge` rebuilds ``results.json``/``results.csv`` from markers.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tumor_det.inference.lesions import LesionRules
from tumor_det.inference.predictor import TumorPredictor
from tumor_det.io import KINDS_2D, Source, UsageError
from tumor_det.splash.results import ImageResult, VideoResult, VolumeResult
from tumor_det.splash.runner import run
from tumor_det.splash.sink import SplashSink, class_metadata
from tumor_det.splash.writers import OutputGuard
from tumor_det.utils.atomic import remove_stale_temporaries, write_json

logger = logging.getLogger(__name__)

#: Folder of the done markers inside the output folder (visible: outputs never start with ".").
MARKER_DIR = "done"
MARKER_VERSION = 1


# --- the plan: run order, stems, tasks, parts ------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Inputs processed together: positions in the run order, and their size in bytes."""

    indices: tuple[int, ...]
    size: int


@dataclass
class RunPlan:
    """The inputs of a whole run in run order (stems run-unique), their tasks, and an id of
    the input list that every part and marker of the run shares."""

    sources: list[Source]
    tasks: list[Task]
    fingerprint: str

    def subset(self, indices: Iterable[int]) -> list[Task]:
        """The tasks restricted to ``indices`` (empty tasks dropped), in run order."""
        keep = set(indices)
        tasks = [Task(tuple(i for i in t.indices if i in keep), 0) for t in self.tasks]
        return [Task(t.indices, sum(_size(self.sources[i]) for i in t.indices))
                for t in tasks if t.indices]


def run_order(sources: Sequence[Source]) -> list[Source]:
    """2D inputs, then the others, each in input order (what :func:`runner.run` does)."""
    return ([s for s in sources if s.kind in KINDS_2D]
            + [s for s in sources if s.kind not in KINDS_2D])


def _size(src: Source) -> int:
    total = 0
    for path in src.paths:
        try:
            total += os.stat(path).st_size
        except OSError:  # unknown size: counts as 0 (the input is skipped later anyway)
            pass
    return total


def fingerprint(sources: Sequence[Source]) -> str:
    """A short id of an ordered input list (kinds and paths as given)."""
    h = hashlib.sha256()
    for src in sources:
        h.update(json.dumps([src.kind, [str(p) for p in src.paths]]).encode() + b"\n")
    return h.hexdigest()[:16]


def plan_run(sources: Sequence[Source], batch_size: int = 4) -> RunPlan:
    """Run order, run-unique stems (as a single run's sink gives them) and tasks."""
    namer = SplashSink(Path(), OutputGuard(()), ["tumor"])  # its unique_stem: the one rule
    ordered = [dataclasses.replace(s, stem=namer.unique_stem(s.stem)) for s in run_order(sources)]
    batch_size = max(1, batch_size)
    tasks: list[Task] = []
    flat = [i for i, s in enumerate(ordered) if s.kind in KINDS_2D]
    for k in range(0, len(flat), batch_size):
        group = tuple(flat[k:k + batch_size])
        tasks.append(Task(group, sum(_size(ordered[i]) for i in group)))
    tasks += [Task((i,), _size(s)) for i, s in enumerate(ordered) if s.kind not in KINDS_2D]
    return RunPlan(ordered, tasks, fingerprint(ordered))


def partition(tasks: Sequence[Task], num_parts: int) -> list[list[Task]]:
    """Deal ``tasks`` to ``num_parts`` parts: largest first (ties: run order), each to the part
    with the fewest bytes so far (ties: lowest part). Deterministic; each task in one part; each
    part's tasks in run order. (Greedy LPT scheduling: a few lines, no library needed.)"""
    if num_parts < 1:
        raise UsageError("--num-parts must be at least 1")
    parts: list[list[Task]] = [[] for _ in range(num_parts)]
    load = [0] * num_parts
    for task in sorted(tasks, key=lambda t: (-t.size, t.indices[0])):
        k = min(range(num_parts), key=lambda p: (load[p], p))
        parts[k].append(task)
        load[k] += task.size
    return [sorted(p, key=lambda t: t.indices[0]) for p in parts]


def part_indices(plan: RunPlan, num_parts: int = 1, part_id: int = 0) -> list[int]:
    """Run-order positions of the inputs of part ``part_id`` of ``num_parts``."""
    if not 0 <= part_id < num_parts:
        raise UsageError(f"--part-id must be in 0..{num_parts - 1}, got {part_id}")
    return sorted(i for t in partition(plan.tasks, num_parts)[part_id] for i in t.indices)


def read_manifest(path: str | os.PathLike) -> list[str]:
    """Inputs listed in a manifest: a CSV with a ``path`` (or ``file``) column, or one path per
    line (``#`` comments). Relative paths are relative to the manifest's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"--manifest {path}: {exc.strerror or exc}") from exc
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise UsageError(f"--manifest {path}: lists no input")
    header = next(csv.reader([lines[0]]))
    column = next((c for c in ("path", "file") if c in header), None)
    if column is not None:
        entries = [row[column] for row in csv.DictReader(lines) if row.get(column)]
    elif path.suffix.lower() == ".csv" and len(header) > 1:
        raise UsageError(f"--manifest {path}: a CSV manifest needs a 'path' column")
    else:
        entries = [ln.strip() for ln in lines]
    return [e if os.path.isabs(e) else str(path.parent / e) for e in entries]


# --- done markers ----------------------------------------------------------------------------


def marker_path(output: Path, stem: str) -> Path:
    return Path(output) / MARKER_DIR / f"{stem}.json"


def read_marker(path: Path) -> dict | None:
    """A marker's content, or None when it is missing or unreadable."""
    try:
        marker = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("version") == MARKER_VERSION \
        else None


def completed(output: Path, src: Source) -> dict | None:
    """The done marker of ``src`` in ``output`` when its outputs are complete: status done,
    the same stem and input paths, and every output file it lists still there."""
    marker = read_marker(marker_path(output, src.stem))
    if (marker is None or marker.get("status") != "done" or marker.get("stem") != src.stem
            or marker.get("paths") != [str(p) for p in src.paths]):
        return None
    if not all((Path(output) / name).is_file() for name in marker.get("outputs", [])):
        return None
    return marker


class RecordingGuard(OutputGuard):
    """An :class:`OutputGuard` that also records every output path it allowed."""

    def __init__(self, inputs: Iterable[Path]):
        super().__init__(inputs)
        self.recorded: list[Path] = []

    def check(self, path: Path) -> Path:
        path = super().check(path)
        self.recorded.append(Path(path))
        return path


def inputs_inside(sources: Iterable[Source], output: Path) -> list[Path]:
    """The input files under ``output`` (the only ones an output could replace): what a
    guard needs, without shipping every path of a large cohort to each worker."""
    root = os.path.realpath(output) + os.sep
    return [p for s in sources for p in s.paths if os.path.realpath(p).startswith(root)]


@dataclass(frozen=True)
class SinkSettings:
    """How outputs are drawn and which are written (the ``SplashSink`` options)."""

    tint: tuple[int, int, int] | None = None
    dicom_seg: bool = True
    save_probabilities: bool = False


class MarkerSink:
    """A :class:`~tumor_det.splash.results.Sink`: :class:`SplashSink` writes each input's
    files, then this writes its done marker (after invalidating an old one first, so a
    marker never vouches for outputs being replaced). ``markers`` maps run-order positions to
    the markers written by this sink."""

    def __init__(self, sink: SplashSink, plan: RunPlan, output: Path):
        if not isinstance(sink.guard, RecordingGuard):
            raise TypeError("MarkerSink needs a SplashSink with a RecordingGuard")
        self.sink, self.plan, self.output = sink, plan, Path(output)
        self.guard: RecordingGuard = sink.guard
        self.markers: dict[int, dict] = {}
        self._active: set[int] = set()
        self._order = {id(s): i for i, s in enumerate(plan.sources)}
        self._by_path: dict[str, list[int]] = {}
        for i, s in enumerate(plan.sources):
            self._by_path.setdefault(str(s.path), []).append(i)

    @classmethod
    def create(cls, plan: RunPlan, output: Path, cfg, settings: SinkSettings,
               guarded: Iterable[Path] | None = None) -> MarkerSink:
        """A marker sink over a new :class:`SplashSink` for ``cfg``'s classes; ``guarded``:
        the input files outputs must not replace (default: :func:`inputs_inside`)."""
        guard = RecordingGuard(inputs_inside(plan.sources, output) if guarded is None
                               else guarded)
        sink = SplashSink(output, guard, *class_metadata(cfg), tint=settings.tint,
                          dicom_seg=settings.dicom_seg,
                          save_probabilities=settings.save_probabilities)
        return cls(sink, plan, output)

    def run(self, predictor: TumorPredictor, indices: Sequence[int], batch_size: int = 4,
            rules: LesionRules | None = None) -> dict[int, dict]:
        """:func:`~tumor_det.splash.runner.run` over the inputs at ``indices``; their markers
        (taken out of :attr:`markers`)."""
        self._active = set(indices)
        try:
            run(predictor, [self.plan.sources[i] for i in indices], self, batch_size, rules)
        finally:
            self._active = set()
        return {i: self.markers.pop(i) for i in indices if i in self.markers}

    def write_image(self, result: ImageResult) -> None:
        self._write(result.source, self.sink.write_image, result)

    def write_volume(self, result: VolumeResult) -> None:
        self._write(result.source, self.sink.write_volume, result)

    def write_video(self, result: VideoResult) -> None:
        self._write(result.source, self.sink.write_video, result)

    def skip(self, path: Path | str, reason: str) -> None:
        self.sink.skip(path, reason)
        # run() names a skipped input by its path; a folder of several DICOM series is several
        # sources with one path: the first one without a marker yet is the one being run.
        pending = [i for i in self._by_path.get(str(path), [])
                   if i in self._active and i not in self.markers]
        if pending:
            self._mark(pending[0], "skipped", reason=reason)

    def _write(self, src: Source, write: Callable, result) -> None:
        index = self._order.get(id(src))
        if index is None:  # a source not from the plan: plain SplashSink behaviour
            write(result)
            return
        marker_path(self.output, src.stem).unlink(missing_ok=True)
        report = self.sink.report
        n_rows, n_records, n_warn = len(report.rows), len(report.records), len(report.warnings)
        self.guard.recorded = []
        write(result)
        self._mark(index, "done", rows=report.rows[n_rows:], records=report.records[n_records:],
                   warnings=report.warnings[n_warn:],
                   outputs=[os.path.relpath(p, self.output) for p in self.guard.recorded])

    def _mark(self, index: int, status: str, **content) -> None:
        src = self.plan.sources[index]
        marker = new_marker(self.plan, index, status, **content)
        write_json(marker_path(self.output, src.stem), marker)
        self.markers[index] = marker


def new_marker(plan: RunPlan, index: int, status: str, *, rows: Sequence[dict] = (),
               records: Sequence[dict] = (), warnings: Sequence = (),
               outputs: Sequence[str] = (), reason: str = "") -> dict:
    src = plan.sources[index]
    return {"version": MARKER_VERSION, "run": plan.fingerprint, "order": index,
            "total": len(plan.sources), "stem": src.stem, "kind": src.kind,
            "file": str(src.path), "paths": [str(p) for p in src.paths], "status": status,
            "reason": reason, "outputs": list(outputs), "rows": list(rows),
            "records": list(records), "warnings": [list(w) for w in warnings]}


def resume(plan: RunPlan, indices: Iterable[int], output: Path
           ) -> tuple[list[int], dict[int, dict]]:
    """Split ``indices`` into inputs still to run and the markers of those already complete
    (``--continue``). A complete marker is rewritten with this run's position and id when the
    input list changed, so a later merge sees one run; the outputs are not touched. Temporary
    files of a killed run (over a minute old: parts sharing the folder may be writing) go."""
    for folder in (Path(output), Path(output) / MARKER_DIR):
        remove_stale_temporaries(folder)
    todo, done = [], {}
    for i in indices:
        marker = completed(output, plan.sources[i])
        if marker is None:
            todo.append(i)
            continue
        if (marker["order"], marker["run"], marker["total"]) != (i, plan.fingerprint,
                                                                 len(plan.sources)):
            marker = {**marker, "order": i, "run": plan.fingerprint, "total": len(plan.sources)}
            write_json(marker_path(output, plan.sources[i].stem), marker)
        done[i] = marker
    return todo, done


# --- a local run (one process, all inputs or one part) ---------------------------------------


@dataclass
class PartResult:
    """The markers of a part's inputs (positions -> marker), and how many were resumed."""

    markers: dict[int, dict] = field(default_factory=dict)
    resumed: int = 0


def run_part(predictor: TumorPredictor, plan: RunPlan, output: Path, settings: SinkSettings,
             indices: Sequence[int], batch_size: int = 4, rules: LesionRules | None = None,
             resume_done: bool = False) -> PartResult:
    """Run the inputs at run-order ``indices`` of ``plan`` into ``output`` with done markers;
    with ``resume_done`` the complete ones are not run again."""
    todo, done = resume(plan, indices, output) if resume_done else (list(indices), {})
    if done:
        logger.info("--continue: %d of %d inputs already complete", len(done), len(indices))
    sink = MarkerSink.create(plan, Path(output), predictor.cfg, settings)
    new = sink.run(predictor, todo, batch_size, rules) if todo else {}
    return PartResult({**done, **new}, len(done))
