#!/usr/bin/env python
"""K-fold cross-validation by patient: one model per fold, pooled metrics, an operating point.

    python tools/cross_validate.py --config-file configs/quick_cpu.yaml --dataset brain_tumor_cv \\
        --folds 3 OUTPUT_DIR output/cv_brain_tumor

The command line is :mod:`tumor_det.cli.cross_validate` (also ``tumor-det-cross-validate``).
"""

from __future__ import annotations

import sys

from tumor_det.cli.cross_validate import main

if __name__ == "__main__":
    sys.exit(main())
