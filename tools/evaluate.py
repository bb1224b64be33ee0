#!/usr/bin/env python
"""Score NIfTI tumor masks against ground truth, case by case; write per_case.csv, summary.json.

    python tools/evaluate.py --pred output/splash --gt /data/labels --output output/eval
    python tools/evaluate.py --help

The command line is :mod:`tumor_det.cli.evaluate` (also ``tumor-det-evaluate``); matching rule
and metric definitions: :mod:`tumor_det.evaluation.matching`, :mod:`tumor_det.evaluation.cases`.
"""

from __future__ import annotations

import sys

from tumor_det.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
