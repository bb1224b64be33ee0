"""``write_report(run_dir)``: detect the run's kind, build its page, write ``report.html``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from tumor_det.report import cases, crossval, evaluation, html, splash
from tumor_det.report.detect import KINDS, ReportError, detect_kind, evaluation_dirs
from tumor_det.report.runinfo import record_run, run_info
from tumor_det.utils.atomic import write_text

REPORT = "report.html"
TITLES = {"evaluation": "Evaluation", "cross_validation": "Cross-validation",
          "cases": "Per-case 3D evaluation", "splash": "Splash: findings"}
BUILDERS = {"evaluation": evaluation.build, "cross_validation": crossval.build,
            "cases": cases.build, "splash": splash.build}


def _main_file(run_dir: Path, kind: str) -> Path:
    if kind == "evaluation":
        return evaluation_dirs(run_dir)[0] / "tumor_metrics_per_image.csv"
    return run_dir / {"cross_validation": "cv_summary.json", "cases": "summary.json",
                      "splash": "results.csv"}[kind]


def build_page(run_dir: str | os.PathLike, kind: str | None = None) -> str:
    """The HTML of the report of ``run_dir``; raises :class:`ReportError`."""
    run_dir = Path(run_dir)
    found = detect_kind(run_dir)
    kind = kind or found
    if kind not in KINDS:
        raise ReportError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    page = html.Page(f"tumor-det report: {TITLES[kind]}", str(run_dir.resolve()))
    page.add("The run", html.definitions(run_info(run_dir, kind, _main_file(run_dir, kind))))
    BUILDERS[kind](page, run_dir)
    return page.render()


def write_report(run_dir: str | os.PathLike, kind: str | None = None,
                 output: str | os.PathLike | None = None, *,
                 command: Sequence[str] | None = None,
                 config_file: str | os.PathLike | None = None,
                 weights: Sequence[str | os.PathLike] = ()) -> Path:
    """Write the report of ``run_dir`` (default ``run_dir/report.html``) atomically; return its
    path. With ``command`` (a tool's hook), first record the run (``run_info.json``: command,
    config, weights, version, date, machine) so that a rebuilt report still shows them."""
    if command is not None:
        record_run(run_dir, command, config_file, weights)
    path = Path(output) if output else Path(run_dir) / REPORT
    return write_text(path, build_page(run_dir, kind))


def report_after_run(run_dir: str | os.PathLike, kind: str, **record) -> Path | None:
    """A tool's hook: :func:`write_report` with the run's ``command``/``config_file``/
    ``weights``; a report that cannot be built is a warning, never a failed run."""
    try:
        path = write_report(run_dir, kind, **record)
    except Exception as exc:  # noqa: BLE001 - the run's own outputs are written already
        logging.getLogger(__name__).warning("report.html not written for %s: %s", run_dir, exc)
        return None
    print(f"report: {path}")
    return path
