"""One splash run, part of a run, or a Ray run, with done markers: what ``tools/splash.py``
calls.

:func:`run_batch` plans the whole run (:func:`~tumor_det.splash.shards.plan_run`), takes part
``part_id`` of ``num_parts``, runs it here or on Ray (``cluster``), and returns the part's
:class:`~tumor_det.splash.sink.Report` built from its done markers. When the part is the whole
run it also writes ``results.json``/``results.csv``; parts are joined by :func:`merge_folders`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tumor_det.inference.lesions import LesionRules
from tumor_det.inference.predictor import TumorPredictor
from tumor_det.io import Source, UsageError
from tumor_det.splash.cluster import Cluster, PredictorSpec, run_on_ray
from tumor_det.splash.merge import Merged, combine, load_markers, write_tables
from tumor_det.splash.shards import (
    RecordingGuard,
    SinkSettings,
    inputs_inside,
    part_indices,
    plan_run,
    run_part,
)
from tumor_det.splash.sink import Report


def run_batch(predictor: TumorPredictor | PredictorSpec, sources: Sequence[Source],
              output: Path, settings: SinkSettings | None = None, batch_size: int = 4,
              rules: LesionRules | None = None, *, num_parts: int = 1, part_id: int = 0,
              resume: bool = False, cluster: Cluster | None = None) -> Report:
    """Run part ``part_id`` of ``num_parts`` of ``sources`` into ``output`` (``resume``: skip
    inputs whose outputs are complete), locally with ``predictor`` or on Ray (``cluster``,
    ``predictor`` then a :class:`PredictorSpec`). Returns the part's report (resumed inputs
    included); a whole run (one part) also writes its tables (``OutputError``/``OSError``
    propagate)."""
    output = Path(output)
    settings = settings or SinkSettings()
    plan = plan_run(sources, batch_size)
    indices = part_indices(plan, num_parts, part_id)
    if cluster is not None:
        if not isinstance(predictor, PredictorSpec):
            raise TypeError("a Ray run takes a PredictorSpec (each actor builds its predictor)")
        result = run_on_ray(predictor, plan, output, settings, indices, cluster, batch_size,
                            rules, resume)
    else:
        if isinstance(predictor, PredictorSpec):
            predictor = predictor.build()
        result = run_part(predictor, plan, output, settings, indices, batch_size, rules, resume)
    report = combine(result.markers.values())
    if num_parts == 1 and report.rows:
        write_tables(output, report, RecordingGuard(inputs_inside(plan.sources, output)))
    return report


def merge_folders(folders: Sequence[str | Path], output: Path) -> tuple[Report, Merged]:
    """Join the done markers of a run's parts in ``folders`` into ``output``'s
    ``results.json``/``results.csv`` (a single run's). Raises :class:`UsageError` when inputs
    have no marker yet (a part not finished: run it, or rerun it with ``--continue``)."""
    merged = load_markers(folders)
    if merged.missing:
        raise UsageError(f"--merge: {merged.missing} of {merged.total} inputs have no result "
                         "yet; finish their parts (rerun them with --continue) and merge again")
    report = combine(merged.markers)
    write_tables(Path(output), report)
    return report, merged
