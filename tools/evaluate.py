#!/usr/bin/env python
"""Score NIfTI tumor masks against ground truth, case by case; write per_case.csv, summary.json.

    python tools/evaluate.py --pred output/splash --gt /data/labels --output output/eval
    python tools/evaluate.py --help

The logic (matching rule, metric definitions) is in :mod:`tumor_det.evaluation.cases`.
"""

from __future__ import annotations

import sys

from tumor_det.evaluation.cases import main

if __name__ == "__main__":
    sys.exit(main())
