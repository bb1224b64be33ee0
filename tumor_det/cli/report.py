"""``tools/report.py RUN_DIR``: (re)build the HTML report of an evaluation, cross-validation,
per-case evaluation or splash run from what it wrote (:mod:`tumor_det.report`).

Exit status 0, or 2 with one ``report.py: error: ...`` line for a missing or unrecognised
folder.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tumor_det.cli.common import user_error
from tumor_det.report.build import write_report
from tumor_det.report.detect import KINDS, ReportError

PROG = "report.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="the output folder of train_net.py --eval-only, cross_validate.py, "
                             "evaluate.py or splash.py")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="where to write the page (default: RUN_DIR/report.html)")
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help="the kind of run (default: detected from its files)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = write_report(args.run_dir, args.kind, args.output)
    except (ReportError, OSError, ValueError, KeyError) as exc:
        return user_error(PROG, exc)
    print(f"report: {path}")
    return 0
