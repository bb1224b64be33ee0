"""What kind of run a folder holds, from the files it wrote."""

from __future__ import annotations

from pathlib import Path

#: The kinds of run a report is made for.
KINDS = ("evaluation", "cross_validation", "cases", "splash")


class ReportError(Exception):
    """A run folder that is missing or holds no run a report is made for (one-line message)."""


def evaluation_dirs(run_dir: Path) -> list[Path]:
    """The TumorEvaluator output folders of an evaluation run (``inference*/<dataset>/``), or
    ``run_dir`` itself when it is one."""
    if (run_dir / "tumor_metrics_per_image.csv").is_file():
        return [run_dir]
    return sorted(p.parent for p in run_dir.glob("inference*/*/tumor_metrics_per_image.csv")
                  if not p.parent.parent.name.endswith("_operating_point"))


def detect_kind(run_dir: str | Path) -> str:
    """The kind of run in ``run_dir`` (one of :data:`KINDS`); raises :class:`ReportError`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such folder")
    if (run_dir / "cv_summary.json").is_file():
        return "cross_validation"
    if (run_dir / "per_case.csv").is_file() and (run_dir / "summary.json").is_file():
        return "cases"
    if (run_dir / "results.csv").is_file() and (run_dir / "results.json").is_file():
        return "splash"
    if evaluation_dirs(run_dir):
        return "evaluation"
    raise ReportError(
        f"{run_dir}: not a run folder tumor-det writes a report for (no cv_summary.json, "
        "per_case.csv + summary.json, results.json + results.csv, or "
        "inference/<dataset>/tumor_metrics_per_image.csv)")
