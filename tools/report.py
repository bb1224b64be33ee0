#!/usr/bin/env python
"""Build the HTML report of a run (evaluation, cross-validation, per-case evaluation, splash).

    python tools/report.py output/cv_brain_tumor
    python tools/report.py output/demo/splash --output /tmp/splash_report.html

The command line is :mod:`tumor_det.cli.report`; the page :mod:`tumor_det.report`.
"""

from __future__ import annotations

import sys

from tumor_det.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
